//! The C interface from C: builds libgp_lite.a, trains a very small model with the gp-lite
//! binary, compiles examples/c/gp_lite_example.c and examples/c/test_gp_lite.c with `cc` against
//! include/gp_lite.h, and runs them:
//! - the example's entities (byte offsets) equal those of `gp-lite predict` (character offsets),
//!   long texts (windows) included;
//! - the C test program passes (load errors and the code of each error, NULL arguments, invalid UTF-8,
//!   empty and long texts, batches, 4 threads on one model);
//! - the C test program runs clean under valgrind (no invalid accesses, no leaks). Without
//!   valgrind that test prints SKIPPED; with GP_LITE_REQUIRE_VALGRIND=1 (set by .ci/run) it fails;
//! - the C test program built with AddressSanitizer runs clean. Where `cc` cannot build with
//!   `-fsanitize=address` it prints SKIPPED; with GP_LITE_REQUIRE_ASAN=1 (set by .ci/run) it fails;
//! - the entry points called from Rust with edge-case lengths and uninitialised out-slots.
//!
//! Artifacts are left in target/<profile>/c-api-test for inspection.

use serde_json::Value;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// System libraries a Rust static library needs on Linux, as printed by
/// `cargo rustc --release --lib --crate-type staticlib -- --print native-static-libs`.
const NATIVE_LIBS: &[&str] = &["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc"];

/// An encoder small enough that the C test runs in seconds under valgrind.
const MICRO_CONFIG: &str = r#"{"vocab_size": 1, "hidden_size": 32, "num_hidden_layers": 1,
  "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128}"#;

/// Maximum model length in tokens: the dev texts (about 40 characters) need windows.
const MAX_LEN: usize = 32;

struct Setup {
    dir: PathBuf,
    model: PathBuf,
    corrupt: PathBuf,
    example: PathBuf,
    test: PathBuf,
    lib: PathBuf,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn gp_lite() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gp-lite"))
}

/// Runs `cmd`, panicking with its output when it fails.
fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{cmd:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Builds the static library with the profile this test was built with (a no-op when
/// `cargo test` already built it) and returns its path.
fn static_library() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_gp-lite"));
    let profile_dir = bin.parent().expect("target/<profile>");
    let target_dir = profile_dir.parent().expect("target");
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["build", "--lib", "--manifest-path"])
        .arg(root().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
        None => panic!("unexpected target directory {}", profile_dir.display()),
    }
    run(&mut cmd, "cargo build --lib");
    let lib = profile_dir.join("libgp_lite.a");
    assert!(lib.is_file(), "{} was not built", lib.display());
    lib
}

/// `cc -Wall -Wextra -Werror -std=c11` of examples/c/`name`.c, linked statically with gp-lite.
fn compile(name: &str, lib: &Path, out_dir: &Path) -> PathBuf {
    compile_with(name, lib, out_dir, &[], name)
}

/// [`compile`] with extra `cc` flags, into `out_dir/exe_name`.
fn compile_with(name: &str, lib: &Path, out_dir: &Path, flags: &[&str], exe_name: &str) -> PathBuf {
    let exe = out_dir.join(exe_name);
    let mut cmd = Command::new("cc");
    cmd.args(flags)
        .args([
            "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-std=c11", "-pthread", "-I",
        ])
        .arg(root().join("include"))
        .arg("-o")
        .arg(&exe)
        .arg(root().join("examples/c").join(format!("{name}.c")))
        .arg(lib)
        .args(NATIVE_LIBS);
    run(&mut cmd, &format!("compiling {name}.c"));
    exe
}

/// A copy of `model` whose model.safetensors is cut in half.
fn corrupt_copy(model: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(model).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    let weights = std::fs::OpenOptions::new()
        .write(true)
        .open(to.join("model.safetensors"))
        .unwrap();
    let len = weights.metadata().unwrap().len();
    weights.set_len(len / 2).unwrap();
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let lib = static_library();
        let dir = lib.parent().unwrap().join("c-api-test");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("micro-config.json");
        std::fs::write(&config, MICRO_CONFIG).unwrap();
        let model = dir.join("model");
        let fixtures = root().join("fixtures/cluener-sample");
        run(
            gp_lite()
                .arg("train")
                .arg("--train")
                .arg(fixtures.join("train.json"))
                .arg("--dev")
                .arg(fixtures.join("dev.json"))
                .arg("--out")
                .arg(&model)
                .arg("--config")
                .arg(&config)
                .args(["--head-size", "16", "--epochs", "1", "--threads", "2", "--quiet"])
                .args(["--max-len", &MAX_LEN.to_string()]),
            "gp-lite train",
        );
        let corrupt = dir.join("corrupt-model");
        corrupt_copy(&model, &corrupt);
        Setup {
            example: compile("gp_lite_example", &lib, &dir),
            test: compile("test_gp_lite", &lib, &dir),
            lib: lib.clone(),
            dir,
            model,
            corrupt,
        }
    })
}

/// The texts of the comparison: dev texts, two long texts (six dev texts each), an empty line
/// and an ASCII line with escapes.
fn texts() -> Vec<String> {
    let dev = std::fs::read_to_string(root().join("fixtures/cluener-sample/dev.json")).unwrap();
    let dev: Vec<String> = dev
        .lines()
        .take(40)
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["text"].as_str().unwrap().to_string()
        })
        .collect();
    let mut texts = dev.clone();
    texts.push(dev[..6].concat());
    texts.push(dev[6..12].concat());
    texts.push(String::new());
    texts.push(r#"Quotes "x" and back\slash in New York City."#.into());
    texts
}

/// Entities of one output line, as (byte start, byte end, type, text, score).
type Ents = Vec<(usize, usize, String, String, f64)>;

fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Entities of a `gp-lite predict` line, offsets converted from characters to bytes.
fn cli_entities(line: &Value, text: &str) -> Ents {
    let byte: Vec<usize> = text
        .char_indices()
        .map(|(b, _)| b)
        .chain(std::iter::once(text.len()))
        .collect();
    line["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let (s, t) = (
                e["start"].as_u64().unwrap() as usize,
                e["end"].as_u64().unwrap() as usize,
            );
            (
                byte[s],
                byte[t],
                e["type"].as_str().unwrap().to_string(),
                e["text"].as_str().unwrap().to_string(),
                e["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn example_entities(line: &Value) -> Ents {
    line["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["start"].as_u64().unwrap() as usize,
                e["end"].as_u64().unwrap() as usize,
                e["type"].as_str().unwrap().to_string(),
                e["text"].as_str().unwrap().to_string(),
                e["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn cli_predict(model: &Path, input: &Path, threshold: &str, extra: &[&str]) -> Vec<Value> {
    let out = run(
        gp_lite()
            .arg("predict")
            .arg("--model")
            .arg(model)
            .arg("--input")
            .arg(input)
            .arg(format!("--threshold={threshold}"))
            .args(extra),
        "gp-lite predict",
    );
    json_lines(&out.stdout)
}

/// A threshold about 20 spans per text of `input` exceed, halfway between two distinct scores
/// (a very briefly trained model scores every span below the default 0).
fn threshold_for(s: &Setup, input: &Path, texts: usize) -> String {
    // Nested: every span has a score (the sample model's default output is flat).
    let mut scores: Vec<f64> = cli_predict(&s.model, input, "-1e30", &["--nested"])
        .iter()
        .flat_map(|l| l["entities"].as_array().unwrap().clone())
        .map(|e| e["score"].as_f64().unwrap())
        .collect();
    scores.sort_by(|a, b| b.total_cmp(a));
    let k = (20 * texts).min(scores.len() - 1);
    let k = (k..scores.len() - 1)
        .find(|&i| scores[i] - scores[i + 1] > 1e-4)
        .expect("distinct scores");
    format!("{}", (scores[k] + scores[k + 1]) / 2.0)
}

#[test]
fn example_matches_cli_predict() {
    let s = setup();
    let texts = texts();
    let input = s.dir.join("texts.txt");
    std::fs::write(&input, texts.join("\n") + "\n").unwrap();
    let sample = s.dir.join("threshold-sample.txt");
    std::fs::write(&sample, texts[..3].join("\n") + "\n").unwrap();
    let threshold = threshold_for(s, &sample, 3);

    let cli = cli_predict(&s.model, &input, &threshold, &[]);
    let example = run(
        Command::new(&s.example)
            .arg(&s.model)
            .arg(&threshold)
            .stdin(std::fs::File::open(&input).unwrap())
            .stderr(Stdio::piped()),
        "gp_lite_example",
    );
    let example = json_lines(&example.stdout);
    assert_eq!(cli.len(), texts.len());
    assert_eq!(example.len(), texts.len());
    let (mut total, mut beyond_window) = (0, 0);
    for (i, text) in texts.iter().enumerate() {
        let want = cli_entities(&cli[i], text);
        let got = example_entities(&example[i]);
        assert_eq!(
            got.len(),
            want.len(),
            "text {i}: {got:?}\nvs gp-lite predict {want:?}"
        );
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((g.0, g.1, &g.2, &g.3), (w.0, w.1, &w.2, &w.3), "text {i}");
            assert_eq!(
                &text[g.0..g.1],
                g.3,
                "text {i}: bytes [{}, {}) are not the entity",
                g.0,
                g.1
            );
            assert!(
                (g.4 - w.4).abs() <= 1e-6 * w.4.abs().max(1.0),
                "text {i}: score {} vs {}",
                g.4,
                w.4
            );
        }
        total += got.len();
        beyond_window += got
            .iter()
            .filter(|e| text[..e.0].chars().count() >= MAX_LEN)
            .count();
    }
    println!("{total} entities at threshold {threshold} agree ({beyond_window} start past the first window)");
    assert!(total > 0, "no entities to compare at threshold {threshold}");
}

fn test_args(s: &Setup, rounds: u32) -> Vec<std::ffi::OsString> {
    vec![
        s.model.clone().into(),
        s.corrupt.clone().into(),
        rounds.to_string().into(),
    ]
}

#[test]
fn c_test_program_passes() {
    let s = setup();
    let out = run(Command::new(&s.test).args(test_args(s, 3)), "test_gp_lite");
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn c_test_program_under_valgrind() {
    let have = Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success());
    if !have {
        assert!(
            std::env::var("GP_LITE_REQUIRE_VALGRIND").as_deref() != Ok("1"),
            "valgrind is not installed and GP_LITE_REQUIRE_VALGRIND=1"
        );
        // Not through println!, which the harness captures: the skip must show by name.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED c_test_program_under_valgrind: valgrind is not installed"
        );
        return;
    }
    let s = setup();
    let supp = root().join("examples/c/valgrind.supp");
    let out = run(
        Command::new("valgrind")
            .arg("--error-exitcode=1")
            .arg("--leak-check=full")
            .arg("--errors-for-leak-kinds=definite,indirect,possible")
            .arg(format!("--suppressions={}", supp.display()))
            .arg(&s.test)
            .args(test_args(s, 1)),
        "test_gp_lite under valgrind",
    );
    let log = String::from_utf8_lossy(&out.stderr);
    let summary: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("lost:") || l.contains("ERROR SUMMARY"))
        .collect();
    println!("{}", summary.join("\n"));
}

/// The C test built with AddressSanitizer (the C side instrumented; every allocation of the
/// process, Rust's included, goes through its checked allocator): use after free, double free
/// and out-of-bounds accesses across the boundary. Leaks are valgrind's job above. Rust's own
/// sanitizers need a nightly toolchain, and ThreadSanitizer reports false races on code it has
/// not instrumented (all of gp-lite's synchronisation), so the threads are checked by valgrind.
#[test]
fn c_test_program_under_address_sanitizer() {
    let s = setup();
    let probe = s.dir.join("asan-probe.c");
    std::fs::write(&probe, "int main(void) { return 0; }\n").unwrap();
    let works = Command::new("cc")
        .args(["-fsanitize=address", "-o"])
        .arg(s.dir.join("asan-probe"))
        .arg(&probe)
        .status()
        .is_ok_and(|st| st.success());
    if !works {
        assert!(
            std::env::var("GP_LITE_REQUIRE_ASAN").as_deref() != Ok("1"),
            "cc cannot build with -fsanitize=address and GP_LITE_REQUIRE_ASAN=1"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED c_test_program_under_address_sanitizer: cc has no AddressSanitizer"
        );
        return;
    }
    let exe = compile_with(
        "test_gp_lite",
        &s.lib,
        &s.dir,
        &["-fsanitize=address", "-fno-omit-frame-pointer"],
        "test_gp_lite_asan",
    );
    let out = run(
        Command::new(&exe)
            .env("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=1")
            .args(test_args(s, 2)),
        "test_gp_lite under AddressSanitizer",
    );
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

/// The C entry points called from Rust with the edge cases C callers produce: a dangling
/// pointer with length 0 (an empty Rust `&str` passed through C has address 1) is an empty
/// text; `(size_t)-1` as a length or a count is an error naming it (it reached
/// `slice::from_raw_parts`: undefined behaviour, natively a read past the text); the out-slots
/// are uninitialised memory (`MaybeUninit`), only ever written.
#[test]
fn lengths_at_the_edges_through_the_c_entry_points() {
    use gp_lite::ffi::*;
    use std::ffi::{CStr, CString};
    use std::mem::MaybeUninit;
    let s = setup();
    let dir = CString::new(s.model.to_str().unwrap()).unwrap();
    let text = "北京欢迎你";
    // SAFETY: the calls follow the header's contract: a live model, texts valid for their
    // lengths (or length 0), out-slots valid for writes; every list and error is freed.
    unsafe {
        // The message of an error of the caller's (`GP_ERR_ARGUMENT`).
        let message = |e: *mut GpError| -> String {
            assert!(!e.is_null(), "no error was set");
            let m = CStr::from_ptr(gp_error_message(e)).to_str().unwrap().to_string();
            assert_eq!(gp_error_code(e), GP_ERR_ARGUMENT, "{m}");
            gp_error_free(e);
            m
        };
        let mut err = MaybeUninit::<*mut GpError>::uninit();
        let m = gp_model_load_threads(dir.as_ptr(), 1, err.as_mut_ptr());
        assert!(!m.is_null() && err.assume_init().is_null());

        let mut out = MaybeUninit::<*mut GpEntities>::uninit();
        for empty in [std::ptr::dangling::<std::ffi::c_char>(), text.as_ptr().cast()] {
            let r = gp_predict(m, empty, 0, out.as_mut_ptr(), err.as_mut_ptr());
            assert_eq!(r, GP_OK, "length 0 at {empty:p}");
            assert!(err.assume_init().is_null());
            assert_eq!(gp_entities_len(out.assume_init()), 0);
            gp_entities_free(out.assume_init());
        }

        for len in [usize::MAX, isize::MAX as usize + 1] {
            let r = gp_predict(m, text.as_ptr().cast(), len, out.as_mut_ptr(), err.as_mut_ptr());
            assert_eq!(r, GP_ERR, "length {len}");
            assert!(out.assume_init().is_null());
            let msg = message(err.assume_init());
            assert!(
                msg.contains("the length of `text`") && msg.contains(&len.to_string()),
                "{msg}"
            );
        }

        // A count no array can have: an error, and not one slot of `out` written.
        let texts = [text.as_ptr().cast::<std::ffi::c_char>()];
        let lens = [text.len()];
        let sentinel = std::ptr::dangling_mut::<GpEntities>();
        let mut slots = [sentinel; 2];
        let r = gp_predict_batch(
            m,
            texts.as_ptr(),
            lens.as_ptr(),
            usize::MAX,
            std::ptr::null(),
            slots.as_mut_ptr(),
            err.as_mut_ptr(),
        );
        assert_eq!(r, GP_ERR);
        assert_eq!(slots, [sentinel; 2], "slots were written for an impossible count");
        let msg = message(err.assume_init());
        assert!(
            msg.contains("`n`") && msg.contains(&usize::MAX.to_string()),
            "{msg}"
        );

        // A batch into uninitialised slots: the empty text at a dangling address, then a text.
        let texts = [std::ptr::dangling::<std::ffi::c_char>(), text.as_ptr().cast()];
        let lens = [0, text.len()];
        let mut two = [MaybeUninit::<*mut GpEntities>::uninit(); 2];
        let r = gp_predict_batch(
            m,
            texts.as_ptr(),
            lens.as_ptr(),
            2,
            std::ptr::null(),
            two.as_mut_ptr().cast(),
            err.as_mut_ptr(),
        );
        assert_eq!(r, GP_OK);
        assert!(err.assume_init().is_null());
        let two = two.map(|slot| slot.assume_init());
        assert_eq!(gp_entities_len(two[0]), 0);
        two.into_iter().for_each(|e| gp_entities_free(e));
        gp_model_free(m);
    }
}
