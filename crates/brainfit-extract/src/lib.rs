//! From stimulus images to layer activations, in pure Rust.
//!
//! Labs compare brains with the activations of a network's layers to the very stimuli the
//! subjects saw. This crate does that step without Python: it decodes the images (PNG, JPEG),
//! preprocesses them as the field does ([`brainfit_kernels::image`]: Pillow's resampling to the
//! byte, the central crop, ImageNet normalisation), and runs an ONNX network with tract, reading
//! out the layers asked for by node or tensor name. Nothing is downloaded at build or run time.
//!
//! It is free of storage and async: callers hand it bytes (a model file, image files) and get
//! arrays back, so the worker decides what to read and where activations go.

mod images;
mod network;

pub use images::{decode_image, is_image_name};
pub use network::{InputSpec, LayerInfo, ModelInfo, Network, inspect_model, list_layers};

/// Errors of feature extraction; each names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The ONNX model cannot be loaded, typed or run, or a layer asked for is not in it.
    #[error("{model}: {message}")]
    Model {
        /// The model file (URL or name as the user gave it).
        model: String,
        /// What is wrong.
        message: String,
    },
    /// An image cannot be decoded or is not usable.
    #[error("{image}: {message}")]
    Image {
        /// The image file (URL or name as the user gave it).
        image: String,
        /// What is wrong.
        message: String,
    },
    /// Preprocessing refused its parameters or an image.
    #[error(transparent)]
    Kernel(#[from] brainfit_kernels::KernelError),
}

/// Result alias of the extraction crate.
pub type Result<T> = std::result::Result<T, ExtractError>;

/// At most this many characters of an error from the ONNX runtime or an image decoder are kept:
/// their messages can quote parts of the file, which errors must not echo at length.
const MAX_FOREIGN_MESSAGE: usize = 400;

/// A foreign error (tract, image) as a bounded message, its causes joined.
fn foreign(e: impl std::fmt::Display) -> String {
    let mut message = format!("{e:#}");
    if message.len() > MAX_FOREIGN_MESSAGE {
        let mut end = MAX_FOREIGN_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(" …");
    }
    message
}
