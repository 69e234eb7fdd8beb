//! gp-lite from Rust: train on the bundled CLUENER sample, then predict.
//! `cargo run --release --example library`
use gp_lite::{load_model, read_dataset, train, Event, PredictOptions, Predictor, TrainOptions, Workspace};
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cluener-sample");
    let train_set = read_dataset(sample.join("train.json"), None)?;
    let dev_set = read_dataset(sample.join("dev.json"), None)?;
    let out = std::env::temp_dir().join("gp-lite-library-example");
    // A tiny encoder from scratch on a character vocabulary; the CLI's `train` defaults.
    let opts = TrainOptions {
        epochs: 30,
        ..TrainOptions::default()
    };
    let report = &mut |e: Event| {
        if let Event::EpochEnd { record, .. } = e {
            println!(
                "epoch {} dev F1 {:.3}",
                record.epoch,
                record.dev_f1.unwrap_or(0.0)
            );
        }
    };
    train(
        &opts,
        &train_set,
        Some(&dev_set),
        &out,
        false,
        Default::default(),
        report,
    )?;

    let model: Predictor<f32> = load_model(&out)?;
    let texts = ["浙商银行企业信贷部叶老桂博士则从另一个角度对五道门槛进行了解读。"];
    let found = model.predict(&texts, &PredictOptions::default(), &mut Workspace::new())?;
    for (text, entities) in texts.iter().zip(found) {
        println!("{text}");
        for e in entities {
            let span: String = text.chars().skip(e.start).take(e.end - e.start).collect();
            println!("  {} [{}, {}) {span} ({:.2})", e.label, e.start, e.end, e.score);
        }
    }
    Ok(())
}
