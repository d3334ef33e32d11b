//! The gRPC client of a coordinator: what `brainfit submit`, `status`, `cancel` and `results`
//! use. It checks the coordinator's handshake before anything else (protocol version, whether
//! a token is required) and sends the token only to a coordinator that requires one.

use crate::{ClientError, Result};
use brainfit_proto::v1::{
    self, HandshakeRequest, JobRequest, JobStatus, ListJobsReply, ListJobsRequest, SubmitRequest,
    coordinator_client::CoordinatorClient,
};
use brainfit_proto::{AddToken, Backoff, ConnectOptions, MAX_MESSAGE_BYTES};
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// How long [`Remote::follow`] keeps retrying an unreachable coordinator (a restart) before it
/// gives up.
const UNREACHABLE_FOR: Duration = Duration::from_secs(300);

/// A connected client of one coordinator.
#[derive(Debug, Clone)]
pub struct Remote {
    client: CoordinatorClient<InterceptedService<Channel, AddToken>>,
    url: String,
}

/// A job's state as `brainfit status` words it.
pub fn state_name(s: &JobStatus) -> &'static str {
    match s.state() {
        v1::JobState::Unspecified => "unknown",
        v1::JobState::Preparing => "preparing",
        v1::JobState::Running => "running",
        v1::JobState::Merging => "merging",
        v1::JobState::Succeeded => "succeeded",
        v1::JobState::Failed => "failed",
        v1::JobState::Cancelled => "cancelled",
    }
}

/// Whether a job in this state will not change any more.
pub fn is_final(s: &JobStatus) -> bool {
    brainfit_coordinator::is_final(s.state())
}

/// A job's status as the JSON `brainfit status --json` prints.
pub fn status_json(s: &JobStatus) -> serde_json::Value {
    serde_json::json!({
        "job_id": s.job_id,
        "name": s.name,
        "state": state_name(s),
        "total": s.total,
        "done": s.done,
        "running": s.running,
        "output": s.output,
        "error": s.error,
        "submitted_unix": s.submitted_unix,
        "resumed": s.resumed,
        "leases": s.leases,
        "retries": s.retries,
        "summary": serde_json::from_str::<serde_json::Value>(&s.summary_json).ok(),
    })
}

impl Remote {
    /// Connects to the coordinator of `options` and checks its handshake.
    pub async fn connect(options: &ConnectOptions) -> Result<Remote> {
        let url = options.url.clone();
        let (channel, auth) =
            brainfit_proto::channel(options).map_err(|e| ClientError::Remote(e.to_string()))?;
        let have_token = auth.has_token();
        let mut client = CoordinatorClient::with_interceptor(channel, auth.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        // the handshake goes out without the token; it is sent only to a coordinator that
        // requires one
        let hello = match client.handshake(HandshakeRequest {}).await {
            Err(s) if brainfit_proto::needs_token(&s, &auth) => {
                auth.arm();
                client.handshake(HandshakeRequest {}).await
            }
            other => other,
        }
        .map_err(|s| rpc_error(&url, s))?;
        brainfit_proto::check_handshake(&url, hello.get_ref(), have_token)
            .map_err(|e| ClientError::Remote(e.to_string()))?;
        auth.arm();
        Ok(Remote { client, url })
    }

    /// Submits a job file's text (`source_name` for messages; relative paths resolve against
    /// `base_url`); returns its first status.
    pub async fn submit(
        &mut self,
        job_toml: String,
        source_name: String,
        base_url: String,
    ) -> Result<JobStatus> {
        let reply = self
            .client
            .submit(SubmitRequest { job_toml, source_name, base_url })
            .await
            .map_err(|s| rpc_error(&self.url, s))?
            .into_inner();
        reply.job.ok_or_else(|| ClientError::Remote(format!("{}: sent no job", self.url)))
    }

    /// Job `id`'s status.
    pub async fn job(&mut self, id: &str) -> Result<JobStatus> {
        let reply = self.client.get_job(JobRequest { job_id: id.to_string() }).await;
        Ok(reply.map_err(|s| rpc_error(&self.url, s))?.into_inner())
    }

    /// Every job and every live worker.
    pub async fn list(&mut self) -> Result<ListJobsReply> {
        let reply = self.client.list_jobs(ListJobsRequest {}).await;
        Ok(reply.map_err(|s| rpc_error(&self.url, s))?.into_inner())
    }

    /// Cancels job `id`; returns its status.
    pub async fn cancel(&mut self, id: &str) -> Result<JobStatus> {
        let reply = self.client.cancel(JobRequest { job_id: id.to_string() }).await;
        Ok(reply.map_err(|s| rpc_error(&self.url, s))?.into_inner())
    }

    /// Follows job `id` until it has ended and returns its last status. `on_update` sees every
    /// status, and `None` while the coordinator is unreachable (a restart): the stream is
    /// opened again for up to five minutes.
    pub async fn follow(
        &mut self,
        id: &str,
        mut on_update: impl FnMut(Option<&JobStatus>),
    ) -> Result<JobStatus> {
        let mut down_since: Option<Instant> = None;
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
        loop {
            let outcome = match self.client.watch(JobRequest { job_id: id.to_string() }).await {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(s)) => {
                                down_since = None;
                                backoff.succeeded();
                                on_update(Some(&s));
                                if is_final(&s) {
                                    return Ok(s);
                                }
                            }
                            Ok(None) => break Ok(()),
                            Err(e) => break Err(e),
                        }
                    }
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => {}
                Err(s)
                    if matches!(
                        s.code(),
                        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
                    ) =>
                {
                    let since = *down_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > UNREACHABLE_FOR {
                        return Err(rpc_error(&self.url, s));
                    }
                    on_update(None);
                }
                Err(s) => return Err(rpc_error(&self.url, s)),
            }
            tokio::time::sleep(backoff.failed()).await;
        }
    }
}

/// An error of an RPC, worded for people.
fn rpc_error(url: &str, status: Status) -> ClientError {
    ClientError::Remote(match status.code() {
        Code::Unavailable => format!("cannot reach the coordinator at {url}: {}", status.message()),
        Code::Unauthenticated => format!("the coordinator at {url} refused: {}", status.message()),
        _ => status.message().to_string(),
    })
}
