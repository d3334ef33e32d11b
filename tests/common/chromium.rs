//! Headless Chromium for the tests of brainfit's HTML report: a screenshot of a page, and the
//! state of every `<img>` once the page has loaded (decoded or broken, natural size).
//!
//! The browser is Debian's `chromium`, found (or installed, as root) by `scripts/chromium.sh`.
//! Every run gets its own temporary profile (`--user-data-dir`), so tests can run browsers at
//! once, and is killed (with the processes it started) when it takes longer than
//! [`TIMEOUT`].

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long one Chromium run may take before it is killed and the test fails.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(60);

/// The id of the `<pre>` that [`decoded_images`] has the page fill with its images' JSON.
const IMAGES_ID: &str = "brainfit-images";

/// The Chromium binary, from `scripts/chromium.sh` (which installs Debian's `chromium`
/// package first when it is missing and this is root). The script runs once per process.
pub(crate) fn chromium() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/chromium.sh");
            let out = Command::new("bash")
                .arg(&script)
                .output()
                .expect("run scripts/chromium.sh (needs bash)");
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert!(
                out.status.success() && !path.is_empty(),
                "scripts/chromium.sh found no Chromium (it installs Debian's `chromium` package \
                 when run as root):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            PathBuf::from(path)
        })
        .clone()
}

/// A PNG screenshot, `width`×`height` pixels, of the page `html` as headless Chromium renders
/// it (scroll bars hidden, after up to 10 s of virtual time so that images and scripts finish
/// first).
pub(crate) fn screenshot(html: &Path, width: u32, height: u32) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let shot = dir.path().join("shot.png");
    let mut screenshot_arg = std::ffi::OsString::from("--screenshot=");
    screenshot_arg.push(&shot);
    run_chromium(
        dir.path(),
        [
            "--hide-scrollbars".into(),
            format!("--window-size={width},{height}").into(),
            "--virtual-time-budget=10000".into(),
            screenshot_arg,
        ],
        html,
    );
    std::fs::read(&shot).unwrap_or_else(|e| {
        panic!("Chromium wrote no screenshot of {} ({}): {e}", html.display(), shot.display())
    })
}

/// What Chromium made of one `<img>` of a page (see [`decoded_images`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageState {
    /// The first 40 characters of its `src` attribute (e.g. `data:image/png;base64,iVBO…`).
    pub src_prefix: String,
    /// Its `alt` attribute (empty when it has none).
    pub alt: String,
    /// The decoded image's width; 0 when it did not decode.
    pub natural_width: u32,
    /// The decoded image's height; 0 when it did not decode.
    pub natural_height: u32,
    /// Whether the browser is done with it, having decoded it or given up (broken images are
    /// `complete` too).
    pub complete: bool,
}

impl ImageState {
    /// Whether the image decoded: `complete && naturalWidth > 0`.
    pub(crate) fn decoded(&self) -> bool {
        self.complete && self.natural_width > 0
    }
}

/// Every `<img>` of the page `html`, in document order, as headless Chromium sees it once the
/// page has loaded (after up to 10 s of virtual time).
///
/// The page is copied, with a small script appended, to a temporary file next to `html` (so
/// that relative image paths still resolve; it is removed again); `html` itself is not
/// modified. On `window.load` the script writes the images' JSON into a
/// `<pre id="brainfit-images">`, which is read back from `--dump-dom`.
pub(crate) fn decoded_images(html: &Path) -> Vec<ImageState> {
    let mut page = std::fs::read(html).unwrap_or_else(|e| panic!("read {}: {e}", html.display()));
    page.extend_from_slice(
        format!(
            r#"
<pre id="{IMAGES_ID}"></pre>
<script>
window.addEventListener("load", () => {{
  const images = Array.from(document.images).map((img) => ({{
    src_prefix: Array.from(img.getAttribute("src") || "").slice(0, 40).join(""),
    alt: img.getAttribute("alt") || "",
    natural_width: img.naturalWidth,
    natural_height: img.naturalHeight,
    complete: img.complete,
    decoded: img.complete && img.naturalWidth > 0,
  }}));
  document.getElementById("{IMAGES_ID}").textContent = JSON.stringify(images);
}});
</script>
"#
        )
        .as_bytes(),
    );
    let parent = html.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut copy = tempfile::Builder::new()
        .prefix(".brainfit-images-")
        .suffix(".html")
        .tempfile_in(parent)
        .unwrap_or_else(|e| {
            panic!("create a temporary copy of {} in its directory: {e}", html.display())
        });
    std::io::Write::write_all(&mut copy, &page).expect("write the temporary copy of the page");
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let dom = run_chromium(
        dir.path(),
        ["--dump-dom".into(), "--virtual-time-budget=10000".into()],
        copy.path(),
    );
    let dom = String::from_utf8_lossy(&dom);
    let open = format!(r#"<pre id="{IMAGES_ID}">"#);
    let json = dom
        .split_once(&open)
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(json, _)| unescape_html_text(json))
        .filter(|json| !json.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "the page {} never reported its images (did `load` fire?); its DOM:\n{}",
                html.display(),
                tail(&dom, 4000)
            )
        });
    let value: serde_json::Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("the images' JSON {json:?} does not parse: {e}"));
    let images = value.as_array().unwrap_or_else(|| panic!("not a JSON array: {json}"));
    images
        .iter()
        .map(|img| {
            let text = |key: &str| img[key].as_str().unwrap_or_default().to_string();
            let number = |key: &str| {
                img[key]
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or_else(|| panic!("{key} of an image is not a u32 in {json}"))
            };
            ImageState {
                src_prefix: text("src_prefix"),
                alt: text("alt"),
                natural_width: number("natural_width"),
                natural_height: number("natural_height"),
                complete: img["complete"].as_bool().unwrap_or(false),
            }
        })
        .collect()
}

/// Width, height and the number of distinct colours (RGBA) of a PNG — a blank screenshot has
/// one colour.
pub(crate) fn png_size_and_colours(png: &[u8]) -> (u32, u32, usize) {
    let (width, height, pixels) = png_rgba(png);
    let colours: std::collections::HashSet<[u8; 4]> = pixels.into_iter().collect();
    (width, height, colours.len())
}

/// A PNG decoded: width, height and its pixels as 8-bit RGBA, row by row.
pub(crate) fn png_rgba(png: &[u8]) -> (u32, u32, Vec<[u8; 4]>) {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0u8; reader.output_buffer_size().expect("a PNG of a sane size")];
    let info = reader.next_frame(&mut buf).expect("a decodable PNG");
    let buf = &buf[..info.buffer_size()];
    let pixels = match info.color_type {
        png::ColorType::Rgba => buf.chunks_exact(4).map(|p| [p[0], p[1], p[2], p[3]]).collect(),
        png::ColorType::Rgb => buf.chunks_exact(3).map(|p| [p[0], p[1], p[2], 255]).collect(),
        png::ColorType::GrayscaleAlpha => {
            buf.chunks_exact(2).map(|p| [p[0], p[0], p[0], p[1]]).collect()
        }
        png::ColorType::Grayscale => buf.iter().map(|&g| [g, g, g, 255]).collect(),
        png::ColorType::Indexed => unreachable!("EXPAND turns palettes into RGB(A)"),
    };
    (info.width, info.height, pixels)
}

/// Runs headless Chromium on `page` with the common flags, a fresh profile in `scratch` and
/// the `extra` flags; its standard output. Panics, with Chromium's standard error, when it
/// fails or takes longer than [`TIMEOUT`] (then it is killed, with the processes it started).
fn run_chromium(
    scratch: &Path,
    extra: impl IntoIterator<Item = std::ffi::OsString>,
    page: &Path,
) -> Vec<u8> {
    let page = std::path::absolute(page).expect("an absolute path of the page");
    let url = file_url(&page);
    let mut profile = std::ffi::OsString::from("--user-data-dir=");
    profile.push(scratch.join("profile"));
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            // /dev/shm is often tiny in containers (64 MiB in Docker); Debian's launcher adds
            // this only when its own check works, which it does not when findmnt answers twice
            "--disable-dev-shm-usage",
        ])
        .arg(profile)
        .args(extra)
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0) // its own group, so that a timeout kills the renderers too
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", chromium().display()));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for Chromium") {
            break Some(status);
        }
        if start.elapsed() > TIMEOUT {
            // the whole process group: the browser and the renderers and helpers it started
            let _ =
                Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
    match status {
        Some(status) if status.success() => stdout,
        Some(status) => panic!(
            "Chromium on {} failed ({status}); its standard error:\n{}",
            page.display(),
            tail(&stderr, 8000)
        ),
        None => panic!(
            "Chromium on {} took longer than {TIMEOUT:?} and was killed; its standard error:\n{}",
            page.display(),
            tail(&stderr, 8000)
        ),
    }
}

/// The `file://` URL of the absolute path `path`, its bytes percent-encoded except for
/// unreserved characters and `/`.
fn file_url(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut url = String::from("file://");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            url.push(char::from(b));
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

/// The text content of an element as `--dump-dom` serialises it, unescaped.
fn unescape_html_text(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&nbsp;", "\u{a0}").replace("&amp;", "&")
}

/// The last `max` bytes of `text` (at a character boundary).
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
