//! An ONNX network run with tract, its chosen layers read out.
//!
//! A layer is named as ONNX names it: a node's name (its first output), `node:k` (its `k`-th
//! output), or the name of a tensor (a node output). The network is typed for a fixed batch of
//! images and optimised once; the layers asked for become the network's outputs, so tract keeps
//! them as they are (no fusing of a read-out convolution with the ReLU after it).

use crate::{ExtractError, Result, foreign};
use brainfit_kernels::image::Layout;
use ndarray::{Array2, Array3, Axis};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::{DimFact, Factoid};

/// The model's image input, as its first input declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSpec {
    /// Channel axis: `[n, 3, h, w]` or `[n, h, w, 3]`.
    pub layout: Layout,
    /// Image height the model takes, if the model fixes it.
    pub height: Option<usize>,
    /// Image width the model takes, if the model fixes it.
    pub width: Option<usize>,
    /// The batch size, if the model fixes it (exports with a batch of 1 often do).
    pub batch: Option<usize>,
}

/// One node of a model, for `brainfit extract --list-layers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// The node's name.
    pub node: String,
    /// Its operator (ONNX op type as tract names it).
    pub op: String,
    /// Its outputs: tensor name and per-image shape (without the batch axis; `None` where the
    /// shape is not known for a fixed input size).
    pub outputs: Vec<(String, Option<Vec<usize>>)>,
}

/// What a job needs to know of a model before running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The image input.
    pub input: InputSpec,
    /// Per layer asked for (in the order asked), its per-image shape.
    pub layers: Vec<Vec<usize>>,
}

fn model_error(model: &str, message: impl Into<String>) -> ExtractError {
    ExtractError::Model { model: model.to_string(), message: message.into() }
}

fn load(bytes: &[u8], model: &str) -> Result<InferenceModel> {
    tract_onnx::onnx().model_for_read(&mut std::io::Cursor::new(bytes)).map_err(|e| {
        model_error(model, format!("is not an ONNX model tract can load: {}", foreign(e)))
    })
}

fn dim_value(d: &DimFact) -> Option<usize> {
    d.concretize().and_then(|d| d.as_i64()).and_then(|v| usize::try_from(v).ok())
}

/// The model's image input, read from its declared input shape.
fn input_spec(model: &InferenceModel, name: &str) -> Result<InputSpec> {
    let inputs = model.input_outlets().map_err(|e| model_error(name, foreign(e)))?;
    if inputs.len() != 1 {
        return Err(model_error(
            name,
            format!("has {} inputs; brainfit runs networks with one image input", inputs.len()),
        ));
    }
    let fact = model.input_fact(0).map_err(|e| model_error(name, foreign(e)))?;
    let dims: Vec<Option<usize>> = fact.shape.dims().map(dim_value).collect();
    if dims.len() != 4 {
        return Err(model_error(
            name,
            format!(
                "its input has {} axes; an image batch has 4 ([n, 3, h, w] or [n, h, w, 3])",
                dims.len()
            ),
        ));
    }
    let layout = match (dims[1], dims[3]) {
        (Some(3), _) => Layout::Nchw,
        (_, Some(3)) => Layout::Nhwc,
        _ => {
            return Err(model_error(
                name,
                format!(
                    "its input shape {} has no axis of 3 colour channels at position 1 or 3",
                    fact.format_dt_shape()
                ),
            ));
        }
    };
    let (height, width) = match layout {
        Layout::Nchw => (dims[2], dims[3]),
        Layout::Nhwc => (dims[1], dims[2]),
    };
    Ok(InputSpec { layout, height, width, batch: dims[0] })
}

/// The input fact for `batch` images of `height × width` in `layout`.
fn batch_fact(layout: Layout, batch: usize, height: usize, width: usize) -> InferenceFact {
    let shape = match layout {
        Layout::Nchw => [batch, 3, height, width],
        Layout::Nhwc => [batch, height, width, 3],
    };
    f32::fact(shape).into()
}

fn outputs_by_name(model: &mut InferenceModel, name: &str, layers: &[String]) -> Result<()> {
    let mut outlets = Vec::with_capacity(layers.len());
    for layer in layers {
        let outlet = model.find_outlet_label(layer).or_else(|| {
            let (node, slot) = match layer.rsplit_once(':') {
                Some((node, slot)) if slot.parse::<usize>().is_ok() => {
                    (node, slot.parse::<usize>().unwrap_or(0))
                }
                _ => (layer.as_str(), 0),
            };
            let node = model.node_by_name(node).ok()?;
            (slot < node.outputs.len()).then(|| OutletId::new(node.id, slot))
        });
        match outlet {
            Some(o) => outlets.push(o),
            None => {
                let known: Vec<&str> = model.node_names().take(8).collect();
                return Err(model_error(
                    name,
                    format!(
                        "has no node or tensor named {layer:?} (`brainfit extract --list-layers` lists them; the first nodes are {})",
                        known.join(", ")
                    ),
                ));
            }
        }
    }
    model.select_output_outlets(&outlets).map_err(|e| model_error(name, foreign(e)))
}

/// Lists the nodes of an ONNX model with their output shapes for one image of the model's
/// input size (or `height × width` where the model leaves it open).
pub fn list_layers(
    bytes: &[u8],
    name: &str,
    size: Option<(usize, usize)>,
) -> Result<Vec<LayerInfo>> {
    let mut model = load(bytes, name)?;
    let input = input_spec(&model, name)?;
    if let Ok((h, w)) = sized(&input, size, name) {
        model
            .set_input_fact(0, batch_fact(input.layout, 1, h, w))
            .map_err(|e| model_error(name, foreign(e)))?;
        // shapes are filled in where tract can infer them; a node it cannot type shows `?`
        let _ = model.analyse(false);
    }
    // the ONNX operator names (tract's own differ, e.g. "ConvHir")
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut std::io::Cursor::new(bytes))
        .map_err(|e| model_error(name, foreign(e)))?;
    let op_types: std::collections::HashMap<String, String> = proto
        .graph
        .iter()
        .flat_map(|g| &g.node)
        .flat_map(|n| {
            let key = if n.name.is_empty() {
                n.output.first().cloned().unwrap_or_default()
            } else {
                n.name.clone()
            };
            [(key, n.op_type.clone())]
        })
        .collect();
    let mut out = Vec::new();
    for node in model.nodes() {
        let op = node.op.name().to_string();
        if op == "Const" || op == "Source" {
            continue;
        }
        let op = op_types.get(&node.name).cloned().unwrap_or(op);
        let outputs = (0..node.outputs.len())
            .map(|slot| {
                let outlet = OutletId::new(node.id, slot);
                let label = model.outlet_label(outlet).unwrap_or(&node.name).to_string();
                let shape = node.outputs[slot]
                    .fact
                    .shape
                    .dims()
                    .skip(1)
                    .map(dim_value)
                    .collect::<Option<Vec<usize>>>()
                    .filter(|_| node.outputs[slot].fact.shape.rank().concretize().is_some());
                (label, shape)
            })
            .collect();
        out.push(LayerInfo { node: node.name.clone(), op, outputs });
    }
    Ok(out)
}

/// The image size to run at: the model's, or `size` where given (which must agree with a
/// size the model fixes).
fn sized(input: &InputSpec, size: Option<(usize, usize)>, name: &str) -> Result<(usize, usize)> {
    match (input.height.zip(input.width), size) {
        (Some(fixed), Some(asked)) if fixed != asked => Err(model_error(
            name,
            format!(
                "takes {} × {} images, not the {} × {} asked for",
                fixed.0, fixed.1, asked.0, asked.1
            ),
        )),
        (Some(fixed), _) => Ok(fixed),
        (None, Some(asked)) => Ok(asked),
        (None, None) => Err(model_error(
            name,
            "leaves its input size open: set [extract.preprocess] size = [height, width]",
        )),
    }
}

/// The model's input and the per-image shapes of `layers`, for images of `size` where the
/// model leaves the size open; no plan is built.
pub fn inspect_model(
    bytes: &[u8],
    name: &str,
    layers: &[String],
    size: Option<(usize, usize)>,
) -> Result<ModelInfo> {
    let mut model = load(bytes, name)?;
    let input = input_spec(&model, name)?;
    let (h, w) = sized(&input, size, name)?;
    model
        .set_input_fact(0, batch_fact(input.layout, 1, h, w))
        .map_err(|e| model_error(name, foreign(e)))?;
    outputs_by_name(&mut model, name, layers)?;
    let typed = model.into_typed().map_err(|e| {
        model_error(name, format!("cannot be typed for {h} × {w} images: {}", foreign(e)))
    })?;
    let mut shapes = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        let fact = typed.output_fact(i).map_err(|e| model_error(name, foreign(e)))?;
        let dims = fact.shape.as_concrete().ok_or_else(|| {
            model_error(name, format!("layer {layer:?} has no fixed shape for {h} × {w} images"))
        })?;
        if fact.datum_type != f32::datum_type() {
            return Err(model_error(
                name,
                format!(
                    "layer {layer:?} holds {:?} values; brainfit reads float32 layers",
                    fact.datum_type
                ),
            ));
        }
        shapes.push(dims.iter().skip(1).copied().collect());
    }
    Ok(ModelInfo { input: InputSpec { height: Some(h), width: Some(w), ..input }, layers: shapes })
}

/// A network typed and optimised for batches of images, reading out chosen layers.
#[derive(Debug)]
pub struct Network {
    name: String,
    plan: Arc<TypedSimplePlan>,
    input: InputSpec,
    batch: usize,
    units: Vec<usize>,
}

impl Network {
    /// Loads `bytes` (an ONNX file; `name` for messages) to read out `layers` from batches of
    /// up to `batch` images of the model's size (or `size` where it leaves it open). A model
    /// that fixes its batch size runs batches of that size.
    pub fn load(
        bytes: &[u8],
        name: &str,
        layers: &[String],
        batch: usize,
        size: Option<(usize, usize)>,
    ) -> Result<Network> {
        let info = inspect_model(bytes, name, layers, size)?;
        let batch = info.input.batch.unwrap_or(batch.max(1));
        let (h, w) = (info.input.height.unwrap_or(0), info.input.width.unwrap_or(0));
        let mut model = load(bytes, name)?;
        model
            .set_input_fact(0, batch_fact(info.input.layout, batch, h, w))
            .map_err(|e| model_error(name, foreign(e)))?;
        outputs_by_name(&mut model, name, layers)?;
        let plan = model
            .into_optimized()
            .and_then(IntoRunnable::into_runnable)
            .map_err(|e| model_error(name, format!("cannot be prepared to run: {}", foreign(e))))?;
        let units = info.layers.iter().map(|s| s.iter().product()).collect();
        Ok(Network { name: name.to_string(), plan, input: info.input, batch, units })
    }

    /// The image input (size filled in).
    pub fn input(&self) -> InputSpec {
        self.input
    }

    /// Images per forward pass.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Units (flattened values per image) of each layer read out.
    pub fn units(&self) -> &[usize] {
        &self.units
    }

    /// The layers' activations for `images` (each preprocessed to the model's layout and
    /// size), per layer `[images.len(), units]`, each image's values flattened in C order.
    /// Images go through in batches of [`Network::batch`]; the last batch is padded with
    /// zeros, whose activations are dropped. tract's kernels may round an image's values
    /// differently in batches of different sizes (within float32 rounding), so a job fixes
    /// its batches by the images' order, never by the number of workers.
    pub fn run(&self, images: &[Array3<f32>]) -> Result<Vec<Array2<f32>>> {
        let (h, w) = (self.input.height.unwrap_or(0), self.input.width.unwrap_or(0));
        let image_shape = match self.input.layout {
            Layout::Nchw => (3, h, w),
            Layout::Nhwc => (h, w, 3),
        };
        let mut out: Vec<Array2<f32>> =
            self.units.iter().map(|&u| Array2::zeros((images.len(), u))).collect();
        for (b, chunk) in images.chunks(self.batch).enumerate() {
            let mut input = ndarray::Array4::<f32>::zeros((
                self.batch,
                image_shape.0,
                image_shape.1,
                image_shape.2,
            ));
            for (i, img) in chunk.iter().enumerate() {
                if img.dim() != image_shape {
                    return Err(model_error(
                        &self.name,
                        format!("takes images shaped {image_shape:?}, not {:?}", img.dim()),
                    ));
                }
                input.index_axis_mut(Axis(0), i).assign(img);
            }
            let tensor = Tensor::from_shape(input.shape(), input.as_slice().unwrap_or(&[]))
                .map_err(|e| model_error(&self.name, foreign(e)))?;
            let outputs = self
                .plan
                .run(tvec!(tensor.into()))
                .map_err(|e| model_error(&self.name, format!("failed to run: {}", foreign(e))))?;
            for (layer, value) in outputs.iter().enumerate() {
                let view = value
                    .to_plain_array_view::<f32>()
                    .map_err(|e| model_error(&self.name, foreign(e)))?;
                let units = self.units[layer];
                if view.len() != self.batch * units {
                    return Err(model_error(
                        &self.name,
                        format!(
                            "layer {layer} produced {} values for a batch of {}, not {} per image",
                            view.len(),
                            self.batch,
                            units
                        ),
                    ));
                }
                let flat = view.as_standard_layout();
                let flat = flat.as_slice().unwrap_or(&[]);
                for (i, row) in (0..chunk.len()).zip(flat.chunks_exact(units)) {
                    out[layer].row_mut(b * self.batch + i).assign(&ndarray::ArrayView1::from(row));
                }
            }
        }
        Ok(out)
    }
}
