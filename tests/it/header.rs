//! include/gp_lite.h must be what cbindgen generates from src/ffi/ (the entry points and types of
//! mod.rs and error.rs) with cbindgen.toml.
//!
//! After changing the C interface, rewrite the committed header with
//! `GP_LITE_BLESS=1 cargo test --release --test it header::` and commit it.

use std::path::Path;

#[test]
fn committed_header_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        // Only the C interface: constants elsewhere in the crate are not part of it.
        // (cbindgen follows its `mod error;` and `mod args;`.)
        .with_src(root.join("src/ffi/mod.rs"))
        .with_config(config)
        .generate()
        .expect("cbindgen cannot generate the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = String::from_utf8(generated).expect("the header is UTF-8");
    let path = root.join("include/gp_lite.h");
    if std::env::var("GP_LITE_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, &generated).expect("cannot write include/gp_lite.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(generated.lines().count()))
            + 1;
        panic!(
            "include/gp_lite.h is out of date (first difference at line {line}); \
             run `GP_LITE_BLESS=1 cargo test --release --test it header::` and commit it"
        );
    }
}
