//! Shared helpers for the engine tests: the engines of this test process, the models and test
//! data under shared/models, and a small .npy reader.
#![allow(dead_code)]

use std::sync::OnceLock;

use nimbus_engines::{EngineKind, Engines, EnginesConfig};

/// The repository's shared models folder, relative to this crate (never an absolute path),
/// unless `NIMBUS_MODELS_DIR` names another.
const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/models");

pub fn models_dir() -> String {
    std::env::var("NIMBUS_MODELS_DIR").unwrap_or_else(|_| MODELS.to_owned())
}
/// The tiny models made by tests/models/make_models.py.
pub const TEST_MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/models");

pub fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read `{path}`: {e}"))
}

pub fn shared_model(relative: &str) -> Vec<u8> {
    read(&format!("{}/{relative}", models_dir()))
}

/// The engines, loaded once per test process from the default folder (or NIMBUS_ENGINES_DIR).
/// Fails (never skips) when a library is missing, saying how to get them.
pub fn engines() -> &'static Engines {
    static ENGINES: OnceLock<Engines> = OnceLock::new();
    ENGINES.get_or_init(|| {
        let engines = Engines::load(&EnginesConfig::default());
        for status in engines.status() {
            assert!(
                status.available,
                "{} is unavailable: {}\nThese tests need the real engine libraries: run \
                 scripts/fetch-engines.sh (or point NIMBUS_ENGINES_DIR at a folder holding them).",
                status.kind,
                status.reason.as_deref().unwrap_or("no reason given")
            );
        }
        engines
    })
}

pub fn both() -> [EngineKind; 2] {
    EngineKind::ALL
}

/// A .npy array: its shape and its raw little-endian data, with the dtype descriptor.
pub struct Npy {
    pub descr: String,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

pub fn npy(relative: &str) -> Npy {
    let bytes = shared_model(relative);
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{relative} is not a .npy file");
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    let field = |key: &str| {
        let at = header
            .find(key)
            .unwrap_or_else(|| panic!("no {key} in {header}"));
        &header[at + key.len()..]
    };
    let descr = field("'descr':").trim_start().trim_start_matches('\'');
    let descr = descr[..descr.find('\'').unwrap()].to_string();
    assert!(field("'fortran_order':").trim_start().starts_with("False"));
    let shape = field("'shape':");
    let shape = &shape[shape.find('(').unwrap() + 1..shape.find(')').unwrap()];
    let shape = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    Npy {
        descr,
        shape,
        data: bytes[start + header_len..].to_vec(),
    }
}

pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

/// chelsea.png prepared as the EfficientNet README says: shorter side to 256 (bilinear), centre
/// crop 224, (x - 127) / 128, NCHW with N = 1.
pub fn efficientnet_input(image: &str) -> Vec<f32> {
    let bytes = shared_model(&format!("testdata/{image}"));
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("{image}: unexpected colour type {other:?}"),
    };
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let (w, h) = (info.width as usize, info.height as usize);
    let scale = 256.0 / w.min(h) as f32;
    let (rw, rh) = (
        (w as f32 * scale).round() as usize,
        (h as f32 * scale).round() as usize,
    );
    let (x0, y0) = ((rw - 224) / 2, (rh - 224) / 2);
    let pixel = |x: usize, y: usize, c: usize| buf[(y * w + x) * channels + c] as f32;
    let mut out = vec![0f32; 3 * 224 * 224];
    for y in 0..224 {
        for x in 0..224 {
            // Sample the source at the centre of the resized pixel.
            let sx = ((x + x0) as f32 + 0.5) / scale - 0.5;
            let sy = ((y + y0) as f32 + 0.5) / scale - 0.5;
            let (fx, fy) = (sx.clamp(0.0, (w - 1) as f32), sy.clamp(0.0, (h - 1) as f32));
            let (ix, iy) = (fx.floor() as usize, fy.floor() as usize);
            let (jx, jy) = ((ix + 1).min(w - 1), (iy + 1).min(h - 1));
            let (ax, ay) = (fx - ix as f32, fy - iy as f32);
            for c in 0..3 {
                let top = pixel(ix, iy, c) * (1.0 - ax) + pixel(jx, iy, c) * ax;
                let bottom = pixel(ix, jy, c) * (1.0 - ax) + pixel(jx, jy, c) * ax;
                let v = top * (1.0 - ay) + bottom * ay;
                out[c * 224 * 224 + y * 224 + x] = (v - 127.0) / 128.0;
            }
        }
    }
    out
}
