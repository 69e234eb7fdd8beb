//! Training progress on stderr: a progress bar on a terminal, plain log lines otherwise.

use gp_lite::train::Event;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

/// Terminal progress bar, or plain log lines when stderr is not a terminal.
pub struct Progress {
    quiet: bool,
    bar: Option<ProgressBar>,
    tty: bool,
    epoch_start: Instant,
    tokens: usize,
    loss: f64,
    steps_done: usize,
    /// The bar's note of the last checkpoint of the epoch (empty before one).
    saved: String,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Progress {
            quiet,
            bar: None,
            tty: std::io::stderr().is_terminal(),
            epoch_start: Instant::now(),
            tokens: 0,
            loss: 0.0,
            steps_done: 0,
            saved: String::new(),
        }
    }

    pub fn event(&mut self, e: Event) {
        if self.quiet {
            return;
        }
        match e {
            Event::Info(s) => self.line(&s),
            Event::EpochStart { epoch, steps } => {
                (self.epoch_start, self.tokens, self.loss, self.steps_done) = (Instant::now(), 0, 0.0, 0);
                self.saved.clear();
                if self.tty {
                    let bar = ProgressBar::new(steps as u64);
                    bar.set_style(
                        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                            .unwrap()
                            .progress_chars("=> "),
                    );
                    bar.set_prefix(epoch.to_string());
                    self.bar = Some(bar);
                }
            }
            Event::Step {
                epoch,
                step,
                steps,
                loss,
                tokens,
                lr,
            } => {
                self.tokens += tokens;
                self.loss += loss;
                self.steps_done += 1;
                let tps = self.tokens as f64 / self.epoch_start.elapsed().as_secs_f64();
                let mean = self.loss / self.steps_done as f64;
                if let Some(bar) = &self.bar {
                    bar.set_message(format!("loss {mean:.4} {tps:.0} tok/s lr {lr:.2e}{}", self.saved));
                    if bar.position() + 1 < step as u64 {
                        // A run resumed inside the epoch starts after the batches done before.
                        bar.set_position(step as u64 - 1);
                        bar.reset_eta();
                    }
                    bar.inc(1);
                } else if step % 100 == 0 || step == steps {
                    eprintln!("epoch {epoch} step {step}/{steps} loss {mean:.4} {tps:.0} tok/s lr {lr:.2e}");
                }
            }
            Event::Checkpoint { epoch, step, steps } => {
                if self.bar.is_some() {
                    self.saved = format!(" (saved at {step})");
                } else {
                    eprintln!("epoch {epoch} step {step}/{steps} checkpoint saved");
                }
            }
            Event::EpochEnd { record, best } => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                let dev = match (
                    record.dev_precision,
                    record.dev_recall,
                    record.dev_f1,
                    record.dev_em,
                ) {
                    (Some(p), Some(r), Some(f), _) => {
                        format!(" dev P {:.2} R {:.2} F1 {:.2}", 100.0 * p, 100.0 * r, 100.0 * f)
                    }
                    (_, _, Some(f), Some(em)) => format!(" dev EM {:.2} F1 {:.2}", 100.0 * em, 100.0 * f),
                    _ => String::new(),
                };
                self.line(&format!(
                    "epoch {} loss {:.4} {:.0} tok/s {:.1} s{dev}{}",
                    record.epoch,
                    record.train_loss,
                    record.tokens_per_s,
                    record.seconds,
                    if best { " (saved)" } else { "" }
                ));
            }
        }
    }

    fn line(&self, s: &str) {
        match &self.bar {
            Some(bar) => bar.println(s),
            None => eprintln!("{s}"),
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
