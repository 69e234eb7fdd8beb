//! Crashes mid-write: `gp-lite train` and `gp-lite predict --output` killed with SIGKILL at many
//! points, and a full disk (a file-size limit, `ulimit -f`, with SIGXFSZ ignored so that writes
//! fail with EFBIG as on a full disk).
//!
//! After every kill the model directory must hold no model yet, or a complete one (it loads and
//! predicts), and `--resume` (or a fresh run when no resume state had been saved) must end with
//! the same model, bit for bit, as an uninterrupted run (which saves no checkpoint). The killed
//! runs save the resume state every 3 steps (`--checkpoint-every`), so most kills land inside an
//! epoch after a checkpoint. Points are chosen by time and by watching for the temporary files of
//! the model, of the resume state (and its structure directory) and of training.json. A failing
//! write must name the file and leave the previous model as it was.

use crate::common::{fixture, TempDir, BIN};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const MICRO_CONFIG: &str = r#"{"vocab_size": 1, "hidden_size": 64, "num_hidden_layers": 1,
  "num_attention_heads": 2, "intermediate_size": 128, "max_position_embeddings": 128}"#;
const EPOCHS: usize = 3;

fn train_args(config: &Path, out: &Path) -> Vec<String> {
    let data = fixture("cluener-sample/dev.json");
    let mut a: Vec<String> = ["train", "--train"].iter().map(|s| s.to_string()).collect();
    a.push(data.display().to_string());
    a.extend(["--dev".into(), data.display().to_string()]);
    a.extend(["--out".into(), out.display().to_string()]);
    a.extend(["--config".into(), config.display().to_string()]);
    for s in [
        "--epochs",
        &EPOCHS.to_string(),
        "--batch-size",
        "8",
        "--threads",
        "2",
    ] {
        a.push(s.to_string());
    }
    for s in ["--max-len", "64", "--head-size", "16", "--seed", "3", "--quiet"] {
        a.push(s.to_string());
    }
    a
}

fn run(args: &[String]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn ok(args: &[String]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Names of the files under `dir` (one level of subdirectories), sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() {
            out.extend(listing(&e.path()).into_iter().map(|n| format!("{name}/{n}")));
        } else {
            out.push(name);
        }
    }
    out.sort();
    out
}

/// What may be in the model directory after a kill: nothing loadable yet, or a model that loads
/// and predicts. Returns whether a complete model is there.
fn check_model_dir(out: &Path) -> Result<bool, String> {
    if !out.join("config.json").exists() {
        return Ok(false);
    }
    let p = gp_lite::model_dir::load_model::<f32>(out)
        .map_err(|e| format!("model directory left incomplete ({:?}): {e}", listing(out)))?;
    let mut ws = gp_lite::infer::Workspace::new();
    p.predict(&["北京欢迎你"], &Default::default(), &mut ws)
        .map_err(|e| format!("left model does not predict: {e}"))?;
    Ok(true)
}

enum KillAt {
    /// After this long.
    After(Duration),
    /// As soon as a file whose name starts with this appears under the directory (relative).
    File(&'static str, &'static str),
}

/// Files appearing in a directory, seen through inotify: a small temporary file exists for tens
/// of microseconds before it is renamed, far less than a polling interval (polling alone never
/// saw `.config.json.tmp`, `.training.json.tmp` nor `.state.json.tmp`).
struct Appearing {
    dir: PathBuf,
    fd: libc::c_int,
    /// The watch, once the directory exists (it is created by the run).
    watching: bool,
}

impl Appearing {
    fn new(dir: PathBuf) -> Appearing {
        // SAFETY: a plain system call; the descriptor is closed on drop.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify_init1: {}", std::io::Error::last_os_error());
        Appearing {
            dir,
            fd,
            watching: false,
        }
    }

    /// Whether a file whose name starts with `prefix` was created in (or renamed into) the
    /// directory since the last call, or is there now.
    fn saw(&mut self, prefix: &str) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let mut seen = false;
        if !self.watching {
            let path = std::ffi::CString::new(self.dir.as_os_str().as_bytes()).unwrap();
            let mask = libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF;
            // SAFETY: `path` is a NUL-terminated string alive for the call.
            self.watching = unsafe { libc::inotify_add_watch(self.fd, path.as_ptr(), mask) } >= 0;
        }
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break; // EAGAIN: no more events
            }
            // struct inotify_event: wd, mask, cookie, len (4 bytes each), then `len` name bytes.
            let mut at = 0;
            while at + 16 <= n as usize {
                let field =
                    |i: usize| u32::from_ne_bytes(buf[at + 4 * i..at + 4 * i + 4].try_into().unwrap());
                let (mask, len) = (field(1), field(3) as usize);
                let name = &buf[at + 16..at + 16 + len];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(len)];
                seen |= name.starts_with(prefix.as_bytes());
                if mask & (libc::IN_IGNORED | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) != 0 {
                    self.watching = false; // the directory went (--overwrite moves it aside)
                }
                at += 16 + len;
            }
        }
        // Files there before the watch (and a fallback should inotify miss anything).
        seen || std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
            })
            .unwrap_or(false)
    }
}

impl Drop for Appearing {
    fn drop(&mut self) {
        // SAFETY: our descriptor, closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// Starts `args`, kills it with SIGKILL at `at` (or lets it finish), and returns whether it was
/// killed before finishing.
fn kill_at(args: &[String], out: &Path, at: &KillAt) -> bool {
    let mut watch = match at {
        KillAt::File(sub, _) => Some(Appearing::new(out.join(sub))),
        KillAt::After(_) => None,
    };
    let mut child: Child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        let fire = match at {
            KillAt::After(d) => started.elapsed() >= *d,
            KillAt::File(_, prefix) => watch.as_mut().unwrap().saw(prefix),
        };
        if fire {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return true;
        }
        if started.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("run did not finish in 2 minutes");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

struct Setup {
    dir: TempDir,
    config: PathBuf,
    /// The uninterrupted run's model.safetensors and config.json.
    reference: (Vec<u8>, Vec<u8>),
    /// Its duration.
    took: Duration,
}

fn setup() -> Setup {
    let dir = TempDir::new("crash");
    let config = dir.join("micro.json");
    std::fs::write(&config, MICRO_CONFIG).unwrap();
    let out = dir.join("reference");
    let started = Instant::now();
    ok(&train_args(&config, &out));
    let took = started.elapsed();
    let reference = (
        bytes(&out.join("model.safetensors")),
        bytes(&out.join("config.json")),
    );
    Setup {
        dir,
        config,
        reference,
        took,
    }
}

#[test]
fn train_killed_anywhere_resumes_to_the_same_model() {
    let s = setup();
    let t = s.took.as_secs_f64();
    let mut points: Vec<KillAt> = (1..=8)
        .map(|i| KillAt::After(Duration::from_secs_f64(t * i as f64 / 9.0)))
        .collect();
    for (sub, prefix) in [
        ("", ".model.safetensors.tmp"),
        ("", ".config.json.tmp"),
        ("", ".training.json.tmp"),
        ("resume", ".model-"),
        ("resume", ".optimizer-"),
        ("resume", ".state.json.tmp"),
        ("resume", ".structure.tmp"),
    ] {
        points.push(KillAt::File(sub, prefix));
    }
    let (mut killed, mut mid_write, mut resumed) = (0, 0, 0);
    // Kills per point (up to 4: two rounds of a run and its continuation).
    let mut kills = vec![0usize; points.len()];
    for (i, at) in points.iter().enumerate() {
        let out = s.dir.join(&format!("run-{i}"));
        let mut args = train_args(&s.config, &out);
        args.extend(["--checkpoint-every", "3"].map(String::from));
        // Two kills in a row at the same kind of point, then a run to the end.
        for _ in 0..2 {
            if !kill_at(&args, &out, at) {
                break;
            }
            killed += 1;
            kills[i] += 1;
            if listing(&out).iter().any(|n| n.contains(".tmp")) {
                mid_write += 1;
            }
            check_model_dir(&out).unwrap_or_else(|e| panic!("kill point {i}: {e}"));
            let mut again = args.clone();
            if out.join("resume/state.json").exists() {
                again.push("--resume".into());
                resumed += 1;
            } else {
                again.push("--overwrite".into());
            }
            if kill_at(&again, &out, at) {
                killed += 1;
                kills[i] += 1;
                check_model_dir(&out).unwrap_or_else(|e| panic!("kill point {i} (again): {e}"));
            }
        }
        // Finish: resume what is there (or start over when no epoch was saved).
        let state = out.join("resume/state.json");
        let finished = std::fs::read_to_string(&state)
            .map(|t| t.contains(&format!("\"epochs_done\": {EPOCHS}")))
            .unwrap_or(false);
        if !finished {
            let mut last = args.clone();
            last.push(if state.exists() { "--resume" } else { "--overwrite" }.into());
            ok(&last);
        }
        assert!(check_model_dir(&out).unwrap());
        assert!(
            bytes(&out.join("model.safetensors")) == s.reference.0,
            "kill point {i}: the resumed model differs from an uninterrupted run"
        );
        assert_eq!(bytes(&out.join("config.json")), s.reference.1, "kill point {i}");
    }
    let timed = 8;
    println!(
        "{} kill points, {killed} kills ({mid_write} left a temporary file: killed mid-write), {resumed} resumed with --resume; every final model equals the uninterrupted run's; kills per point: timed {:?}, at a file {:?}",
        points.len(),
        &kills[..timed],
        &kills[timed..]
    );
    // Every point where a file appears fired (the timed ones fire unless a run outpaces the
    // reference run, so they are only counted): a kill point that never fires tests nothing.
    for (k, at) in kills[timed..].iter().zip(&points[timed..]) {
        let KillAt::File(sub, prefix) = at else {
            unreachable!("the points after the timed ones watch files")
        };
        assert!(*k > 0, "no run was killed at {sub}/{prefix}");
    }
    assert!(killed >= points.len(), "too few runs were killed: {killed}");
}

#[test]
fn predict_output_killed_anywhere_is_old_or_complete() {
    let dir = TempDir::new("crash-predict");
    let model = fixture("cluener-sample");
    // A model to predict with: the micro configuration, one epoch.
    let config = dir.join("micro.json");
    std::fs::write(&config, MICRO_CONFIG).unwrap();
    let m = dir.join("model");
    let mut args = train_args(&config, &m);
    let at = args.iter().position(|a| a == "--epochs").unwrap() + 1;
    args[at] = "1".into();
    ok(&args);
    let texts: Vec<String> = std::fs::read_to_string(model.join("train.json"))
        .unwrap()
        .lines()
        .map(|l| l.to_string())
        .collect();
    let input = dir.join("in.jsonl");
    let lines: Vec<&str> = (0..5).flat_map(|_| texts.iter().map(|s| s.as_str())).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let output = dir.join("out.jsonl");
    let predict = |to: &Path| -> Vec<String> {
        [
            "predict",
            "--model",
            m.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["--output".to_string(), to.display().to_string()])
        .collect()
    };
    let full = dir.join("full.jsonl");
    let started = Instant::now();
    ok(&predict(&full));
    let took = started.elapsed().as_secs_f64();
    let complete = bytes(&full);
    let old = b"the previous output\n".to_vec();
    let mut killed = 0;
    for i in 1..=10 {
        std::fs::write(&output, &old).unwrap();
        if kill_at(
            &predict(&output),
            &dir.0,
            &KillAt::After(Duration::from_secs_f64(took * i as f64 / 11.0)),
        ) {
            killed += 1;
        }
        let now = bytes(&output);
        assert!(
            now == old || now == complete,
            "kill {i}: out.jsonl is neither the old file nor the complete output ({} bytes)",
            now.len()
        );
    }
    println!("predict --output: {killed} of 10 runs killed; the output was the old file or the complete one every time");
    // The first points (a tenth of the run in) cannot all miss: without a kill nothing above
    // tested an interrupted write.
    assert!(killed > 0, "no predict run was killed");
}

/// `sh -c 'ulimit -f KB; trap "" XFSZ; exec gp-lite ARGS'`: writes past KB kilobytes fail with
/// EFBIG ("File too large"), as writes to a full disk fail with ENOSPC.
fn with_file_limit(kb: usize, args: &[String]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -f {kb}; trap '' XFSZ; exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args);
    cmd.output().unwrap()
}

#[test]
fn a_full_disk_names_the_file_and_keeps_the_old_model() {
    let s = setup();
    let out = s.dir.join("model");
    let args = train_args(&s.config, &out);
    ok(&args);
    let before: Vec<(String, Vec<u8>)> = listing(&out)
        .into_iter()
        .map(|n| (n.clone(), bytes(&out.join(&n))))
        .collect();
    let weights = before
        .iter()
        .find(|(n, _)| n == "model.safetensors")
        .unwrap()
        .1
        .len();
    // Room for everything but the weights: the first model write fails.
    let mut again = args.clone();
    again.push("--overwrite".into());
    let r = with_file_limit(weights / 1024 / 2, &again);
    let err = String::from_utf8_lossy(&r.stderr).into_owned();
    let train_err = err.trim().to_string();
    assert!(!r.status.success(), "the run did not fail: {err}");
    assert!(
        err.contains("model.safetensors") && err.to_lowercase().contains("too large"),
        "the error does not name the file: {err}"
    );
    let after: Vec<(String, Vec<u8>)> = listing(&out)
        .into_iter()
        .map(|n| (n.clone(), bytes(&out.join(&n))))
        .collect();
    assert!(before == after, "the old model changed: {:?}", listing(&out));
    let parent: Vec<String> = listing(&s.dir.0)
        .into_iter()
        .filter(|n| n.contains("replaced"))
        .collect();
    assert!(parent.is_empty(), "left aside: {parent:?}");
    // predict --output to a full disk: an error naming the output, and no partial file.
    let text = s.dir.join("texts.txt");
    std::fs::write(&text, "北京欢迎你\n".repeat(20_000)).unwrap();
    let target = s.dir.join("pred.jsonl");
    let r = with_file_limit(
        64,
        &[
            "predict",
            "--model",
            out.to_str().unwrap(),
            "--input",
            text.to_str().unwrap(),
            "--output",
            target.to_str().unwrap(),
        ]
        .map(String::from),
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "predict did not fail: {err}");
    assert!(
        err.contains("pred.jsonl"),
        "the error does not name the output: {err}"
    );
    assert!(!target.exists(), "a partial output was left");
    println!(
        "full disk: train says {train_err:?}; predict says {:?}",
        err.trim()
    );
}
