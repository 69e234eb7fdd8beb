fn main() {
    println!("gp-lite {}", env!("CARGO_PKG_VERSION"));
}
