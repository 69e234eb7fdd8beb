//! The integration tests, one binary (the crate links once), one module a theme.

mod architecture;
mod bf16;
mod bf16_training;
mod bio_output;
mod c_api;
mod cli;
mod common;
mod crash;
mod crf_parity;
mod data_readers;
mod encoder_parity;
mod families;
mod fuzz;
mod head_parity;
mod header;
mod heads_e2e;
mod python;
mod quantize;
mod reader;
mod spark;
mod tokenizer_parity;
mod train_e2e;

// The gp-lite binary's allocator: every test runs on it, and fuzz's allocator tests need it global.
#[global_allocator]
static ALLOC: gp_lite::alloc::CachingAlloc = gp_lite::alloc::CachingAlloc;
