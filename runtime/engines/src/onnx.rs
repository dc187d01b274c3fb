//! Just enough of the ONNX protobuf format to check model bytes and read the graph's I/O names.
//!
//! OpenVINO is handed raw bytes and tries every frontend it has (IR, ONNX, TensorFlow, TFLite,
//! Paddle, PyTorch, ...) on them. Checking first, in Rust, that the bytes are a well-formed
//! protobuf `ModelProto` with a graph means garbage is rejected as [`InvalidEncoding`] before any
//! native parser sees it. The graph's input and output names, in order, are also what OpenVINO
//! ports lose: a port has a *set* of tensor names (an `Identity` output can carry its input's name
//! too), and the C API only returns "any" one of them.
//!
//! Only the wire format is read; field numbers are from onnx.proto (ModelProto.graph = 7,
//! GraphProto.initializer = 5, .input = 11, .output = 12, ValueInfoProto.name = 1,
//! TensorProto.name = 8).
//!
//! [`InvalidEncoding`]: crate::EngineError::InvalidEncoding

/// A graph's inputs (without initializers, which ONNX lets a graph list as inputs too) and
/// outputs, in the model's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GraphIo {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self
                .buf
                .split_first()
                .ok_or("truncated varint".to_string())?;
            self.buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let n = usize::try_from(n).map_err(|_| "length out of range".to_string())?;
        if n > self.buf.len() {
            return Err(format!(
                "a field claims {n} bytes but only {} remain",
                self.buf.len()
            ));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field, or `None` at the end of the message.
    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 {
            return Err("field number 0".into());
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed
            }
            2 => {
                let len = self.varint()?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        Ok(Some((number, value)))
    }
}

/// Calls `each` with every (field number, value) of a message; fails if any field is malformed.
fn fields<'a>(
    buf: &'a [u8],
    mut each: impl FnMut(u64, Value<'a>) -> Result<(), String>,
) -> Result<(), String> {
    let mut reader = Reader { buf };
    while let Some((number, value)) = reader.field()? {
        each(number, value)?;
    }
    Ok(())
}

/// The string in field `number` of a message (the last one wins, as in protobuf).
fn string_field(buf: &[u8], number: u64) -> Result<Option<String>, String> {
    let mut found = None;
    fields(buf, |n, v| {
        if let (true, Value::Bytes(b)) = (n == number, v) {
            found = Some(
                std::str::from_utf8(b)
                    .map_err(|_| "a name is not UTF-8".to_string())?
                    .to_string(),
            );
        }
        Ok(())
    })?;
    Ok(found)
}

/// Checks that `bytes` is an ONNX `ModelProto` with a graph and returns the graph's I/O names.
pub(crate) fn graph_io(bytes: &[u8]) -> Result<GraphIo, String> {
    let mut graph = None;
    let mut ir_version = None;
    fields(bytes, |number, value| {
        match (number, value) {
            (1, Value::Varint(v)) => ir_version = Some(v),
            (7, Value::Bytes(b)) => graph = Some(b),
            (1 | 7, _) => return Err(format!("field {number} has the wrong wire type")),
            _ => {}
        }
        Ok(())
    })
    .map_err(|e| format!("not an ONNX model (protobuf parse failed: {e})"))?;
    if ir_version.is_none() {
        return Err("not an ONNX model (no ir_version)".into());
    }
    let graph = graph.ok_or("not an ONNX model (no graph)")?;

    let (mut inputs, mut outputs, mut initializers) = (Vec::new(), Vec::new(), Vec::new());
    fields(graph, |number, value| {
        if let Value::Bytes(b) = value {
            match number {
                5 => initializers.extend(string_field(b, 8)?),
                11 => inputs.push(string_field(b, 1)?.unwrap_or_default()),
                12 => outputs.push(string_field(b, 1)?.unwrap_or_default()),
                _ => {}
            }
        }
        Ok(())
    })
    .map_err(|e| format!("malformed ONNX graph: {e}"))?;
    inputs.retain(|name| !initializers.contains(name));
    Ok(GraphIo { inputs, outputs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(number: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    fn named(number: u64, name_field: u64, name: &str) -> Vec<u8> {
        let mut inner = Vec::new();
        bytes_field(name_field, name.as_bytes(), &mut inner);
        let mut out = Vec::new();
        bytes_field(number, &inner, &mut out);
        out
    }

    #[test]
    fn reads_names_and_drops_initializers() {
        let mut graph = Vec::new();
        graph.extend(named(11, 1, "x"));
        graph.extend(named(11, 1, "weights"));
        graph.extend(named(5, 8, "weights"));
        graph.extend(named(12, 1, "logits"));
        graph.extend(named(12, 1, "probs"));
        let mut model = Vec::new();
        varint(1 << 3, &mut model);
        varint(8, &mut model);
        bytes_field(7, &graph, &mut model);
        let io = graph_io(&model).unwrap();
        assert_eq!(io.inputs, vec!["x"]);
        assert_eq!(io.outputs, vec!["logits", "probs"]);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(graph_io(b"").is_err());
        assert!(graph_io(b"this is not a model at all").is_err());
        assert!(graph_io(&[0xff; 64]).is_err());
        assert!(graph_io(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        let mut state = 0x1234_5678u32;
        for len in 0..512 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            let _ = graph_io(&bytes);
        }
    }
}
