//! The library's one tokio runtime for background I/O: Loki pushes, ClickHouse inserts, OTLP
//! exports and the `/metrics` server all run on it.

use std::sync::OnceLock;

/// The runtime: one worker thread, started on first use and never dropped, so that dropping
/// the library inside another runtime cannot panic. The sinks' worker threads wait on it with
/// `block_on`; servers are spawned on it.
pub fn io_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("serphona-obs-io")
            .enable_all()
            .build()
            .expect("start the serphona-obs I/O runtime")
    })
}
