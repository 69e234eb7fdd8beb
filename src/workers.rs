//! A worker pool that owns its threads: dropping it joins them.

use crate::matmul::thread_pool_builder;
use std::sync::{Arc, Mutex};

/// The worker threads could not be started (the system refused a thread).
#[derive(Debug, thiserror::Error)]
#[error("cannot start worker threads: {0}")]
pub struct WorkersError(#[from] rayon::ThreadPoolBuildError);

/// A rayon pool whose threads are joined when it is dropped, so that no thread of gp-lite outlives
/// `gp_model_free` (a host may unload the library afterwards; leak checkers see no live threads).
pub struct Workers {
    pool: Option<rayon::ThreadPool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// A pool of `num_threads` threads (0: one per logical core).
    pub fn new(num_threads: usize) -> Result<Workers, WorkersError> {
        let threads = Arc::new(Mutex::new(Vec::new()));
        let handles = threads.clone();
        let pool = thread_pool_builder(num_threads)
            .thread_name(|i| format!("gp-lite-{i}"))
            .spawn_handler(move |t| {
                let h = std::thread::Builder::new()
                    .name(t.name().unwrap_or("gp-lite").to_string())
                    .spawn(|| t.run())?;
                handles.lock().unwrap_or_else(|p| p.into_inner()).push(h);
                Ok(())
            })
            .build()?;
        let threads = std::mem::take(&mut *threads.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(Workers {
            pool: Some(pool),
            threads,
        })
    }

    /// The pool.
    pub fn pool(&self) -> &rayon::ThreadPool {
        self.pool.as_ref().expect("the pool lives until drop")
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Dropping the pool tells its threads to finish; then wait for them.
        drop(self.pool.take());
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}
