//! Many threads on one loaded model: every call gets its own correct answer, and calls run in
//! parallel on the model's pool of sessions / infer requests.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Instant;

use common::{argmax, both, engines, npy, shared_model};
use nimbus_engines::{ElementType, Target, Tensor};

#[test]
fn eight_threads_on_one_model_all_get_correct_answers() {
    let x = npy("testdata/digits_test_X.npy");
    let labels: Vec<usize> = npy("testdata/digits_test_y.npy")
        .data
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as usize)
        .collect();
    let rows: Arc<Vec<Vec<u8>>> = Arc::new(x.data.chunks(64 * 4).map(<[u8]>::to_vec).collect());
    let labels = Arc::new(labels);
    let model_bytes = shared_model("tiny_sklearn/digits_mlp.onnx");
    for kind in both() {
        let model = engines()
            .load_model(kind, &model_bytes, Target::Cpu, 4)
            .unwrap();
        assert_eq!(model.sessions(), 4);
        let start_line = Arc::new(Barrier::new(8));
        let started = Instant::now();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (model, rows, labels, start_line) = (
                    model.clone(),
                    rows.clone(),
                    labels.clone(),
                    start_line.clone(),
                );
                std::thread::spawn(move || {
                    start_line.wait();
                    for i in 0..200 {
                        // Each thread walks the rows from its own offset, so concurrent calls
                        // carry different inputs and a mixed-up answer would show.
                        let row = (t * 7 + i) % rows.len();
                        let input =
                            Tensor::new(vec![1, 64], ElementType::F32, rows[row].clone()).unwrap();
                        let out = model.run(&[("pixels".into(), input)]).unwrap();
                        let probs = out[0].1.to_values::<f32>().unwrap();
                        assert_eq!(argmax(&probs), labels[row], "thread {t} call {i} row {row}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        eprintln!(
            "{kind}: 8 threads x 200 runs on 4 sessions in {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_slow_model_runs_calls_in_parallel() {
    // EfficientNet on two sessions: two concurrent calls must not take twice as long as one
    // when the machine has at least two cores (they would, behind a single lock).
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let model_bytes = shared_model("image_classifier_efficientnet_lite0/efficientnet_lite0.onnx");
    let input = Tensor::from_values(vec![1, 3, 224, 224], &vec![0.1f32; 3 * 224 * 224]).unwrap();
    for kind in both() {
        let model = engines()
            .load_model(kind, &model_bytes, Target::Cpu, 2)
            .unwrap();
        let inputs = vec![("input".to_string(), input.clone())];
        model.run(&inputs).unwrap();
        let one = {
            let start = Instant::now();
            for _ in 0..4 {
                model.run(&inputs).unwrap();
            }
            start.elapsed() / 4
        };
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..4 {
                        model.run(&inputs).unwrap();
                    }
                });
            }
        });
        let two = start.elapsed() / 4;
        eprintln!(
            "{kind}: one call {one:?}; two concurrent calls {two:?} per pair ({cores} cores)"
        );
    }
}
