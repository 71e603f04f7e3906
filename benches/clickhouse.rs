//! ClickHouse export cost (issue 3): how many turns per second become ClickHouse rows, and how
//! many get through the whole sink into a ClickHouse engine, with memory.
//!
//! `cargo bench --bench clickhouse`. See BENCHMARKS.md for figures.
//!
//! Two parts, in this order, in one process:
//!
//! 1. **End to end** (timed by hand, not a criterion loop: one run takes seconds). Starts the
//!    chDB HTTP front of the tests (`tests/it/support/chdb_front.py`, the real ClickHouse engine
//!    behind ClickHouse's HTTP interface, from `target/chdb-venv`; panics, saying to run
//!    `scripts/test.sh`, when that venv is missing). Each run creates a database, applies the
//!    built-in migrations, runs `Observability::init` with only the ClickHouse sink
//!    (`batch_size` 5000, `compression: none`, `when_full: block`), emits 50,000 turns in 500
//!    conversations of 100 turns (each started and ended), calls `shutdown`, and then requires
//!    `count()` of `interactions` and `events` to equal what was emitted. Reported: the time to
//!    emit, the time until `shutdown` returned (everything acknowledged by ClickHouse), the
//!    bench process's peak RSS (`VmHWM`) before and after, and the front's RSS. It runs first,
//!    so the peak RSS before it is the process's own baseline.
//! 2. **Encoding** (criterion). Realistic turn events (built by the library through a
//!    collecting sink: UUIDv7 ids, trace ids, ~85-character content, sentiment, intent and
//!    confidence, a `TurnLatency` on the agent turns, i.e. half of them), in batches of 1,000
//!    and 10,000:
//!    - `json_event_log_baseline`: `serde_json::to_vec` of each event, the event log's
//!      encoding: the baseline the ratios are taken against;
//!    - `interaction_rows_only`: `rows::interaction_row` of each event (the borrowed row
//!      structs, no bytes yet);
//!    - `interactions_rowbinary_insert`: those rows written through a real `clickhouse`
//!      `Insert` (`analytics::insert_rows`, RowBinary, `Compression::None`,
//!      validation off, so no schema query) to a local HTTP server in this process that reads
//!      the whole request and answers `200 OK`: row building + RowBinary serialization + the
//!      HTTP request, with the server's reading on the same 2 cores;
//!    - `turn_all_tables_insert`: what the sink writes for a batch of turns: the `events`
//!      rows (which carry the event's JSON as `payload`), the `interactions` rows and the
//!      `spans` rows, one insert per table, as `Exporter::insert_table` does.
//!
//!    Before the criterion loops it prints the bytes per turn of each encoding (as the server
//!    received them) and times 2,000,000 rows of `interactions` inserts of each size by hand:
//!    the median and 90th-percentile insert, and the CPU time of the client thread per insert
//!    (`/proc/thread-self/schedstat`), which separates encoding cost from waiting on the socket.
//!
//! When run without `--bench` (`cargo test --benches`), the end-to-end part makes one small
//! run (2,000 turns), the hand-timed inserts are 20,000 rows, and criterion runs each
//! benchmark once, as a smoke test.

mod support;

use support::chdb::Front;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use serphona_obs::config::{Compression, Endpoint, WhenFull};
use serphona_obs::analytics::insert_rows;
use serphona_obs::analytics::rows::{self, EventRow, InteractionRow, SpanRow};
use serphona_obs::analytics::schema::{Migrator, RenderOptions, built_in};
use serphona_obs::pipeline::{SharedEvent, Sink, SinkError};
use serphona_obs::types::*;
use serphona_obs::{Config, Observability};

/// Turns per conversation, in the events of both parts.
const TURNS_PER_CONVERSATION: usize = 100;
/// Per-insert timeout given to `insert_rows`.
const INSERT_TIMEOUT: Duration = Duration::from_secs(60);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Without `--bench` (a smoke test): one small end-to-end run, fewer timed inserts.
    let bench = args.iter().any(|a| a == "--bench");
    let (runs, turns, timed_rows) = if bench { (3, 50_000, 2_000_000) } else { (1, 2_000, 20_000) };
    if !args.iter().any(|a| a == "--list") {
        end_to_end(runs, turns);
    }
    let mut c = Criterion::default().configure_from_args();
    encode(&mut c, timed_rows);
    c.final_summary();
}

// --- the events ---------------------------------------------------------------------------

const CUSTOMER: [(&str, &str, f64); 4] = [
    ("I was charged twice on my March bill and I would like the second charge refunded.", "billing_dispute", -0.6),
    ("My internet keeps dropping every evening around eight, can someone check the line?", "connectivity_issue", -0.4),
    ("I want to move to the cheaper plan you advertised last week, without any extra fees.", "plan_change", 0.1),
    ("Great, that works for me. Can you also send me the confirmation by email, please?", "confirmation", 0.7),
];

const AGENT: [(&str, &str, f64); 4] = [
    ("I can see the duplicate charge of 49.99 from March 3rd; I will start the refund now.", "refund_offer", 0.3),
    ("Thanks for waiting. There is an outage in your area and it should be fixed tonight.", "outage_notice", 0.1),
    ("Sure, the Basic 20 plan is 29 euros a month and I can switch you at no extra cost.", "plan_offer", 0.5),
    ("Done. The confirmation is on its way to your email address. Anything else for today?", "wrap_up", 0.6),
];

/// Turn `i` of a conversation: customer turns (even `i`) with sentiment and intent, agent turns
/// with sentiment, intent and the voice latency parts.
fn turn(i: usize) -> Interaction {
    let k = (i / 2) % CUSTOMER.len();
    if i.is_multiple_of(2) {
        let (content, intent, sentiment) = CUSTOMER[k];
        Interaction::customer(content).sentiment(sentiment).intent(intent, 0.91).duration_ms(4200.0)
    } else {
        let (content, intent, sentiment) = AGENT[k];
        Interaction::agent(content)
            .sentiment(sentiment)
            .intent(intent, 0.88)
            .duration_ms(5100.0)
            .latency(TurnLatency {
                stt_ms: Some(180.0),
                end_of_utterance_ms: Some(240.0),
                llm_ttft_ms: Some(410.0),
                tts_ttfb_ms: Some(120.0),
                response_ms: Some(950.0),
                interrupted: i % 10 == 1,
                ..TurnLatency::default()
            })
    }
}

/// Emits `turns` turns through `obs`, `TURNS_PER_CONVERSATION` per conversation, each
/// conversation started and ended; returns how many conversations that took.
fn emit(obs: &Observability, turns: usize) -> usize {
    let conversations = turns.div_ceil(TURNS_PER_CONVERSATION);
    for c in 0..conversations {
        let conv = obs.start_conversation(ConversationStart::new(
            "acme-telco",
            "acme-billing-bot",
            format!("cust-{c}"),
            Channel::Voice,
        ));
        for i in 0..TURNS_PER_CONVERSATION.min(turns - c * TURNS_PER_CONVERSATION) {
            conv.track_interaction(turn(i));
        }
        conv.end(ConversationEnd::new(Resolution::Resolved));
    }
    conversations
}

/// Keeps the events it is given.
struct Collect(Arc<Mutex<Vec<Event>>>);

impl Sink for Collect {
    fn name(&self) -> &str {
        "collect"
    }
    fn write(&mut self, events: &[SharedEvent]) -> Result<(), SinkError> {
        self.0.lock().unwrap().extend(events.iter().map(|e| Event::clone(e)));
        Ok(())
    }
}

/// `n` turn events as the library builds them (through a collecting sink).
fn turn_events(n: usize) -> Vec<SharedEvent> {
    let dir = tempfile::tempdir().unwrap();
    let collected = Arc::new(Mutex::new(Vec::new()));
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.metrics.enabled = false;
    config.logging.enabled = false;
    config.pipeline.when_full = WhenFull::Block;
    let obs = Observability::builder(config).sink(Collect(collected.clone())).build().unwrap();
    emit(&obs, n);
    obs.shutdown(Duration::from_secs(60)).unwrap();
    let events: Vec<SharedEvent> = std::mem::take(&mut *collected.lock().unwrap())
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::AgentTurn { .. } | EventKind::CustomerTurn { .. }))
        .map(SharedEvent::new)
        .collect();
    assert_eq!(events.len(), n, "the collecting sink got {} turns of {n}", events.len());
    events
}

// --- part 1: end to end through the chDB front --------------------------------------------


/// User plus system CPU time of a whole process, all threads (`/proc/<pid>/stat`, in clock
/// ticks of 1/100 s, Linux's USER_HZ).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses: utime and stime are the
    // 14th and 15th fields of the line, the 12th and 13th after it.
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    let ticks: u64 = after.split_whitespace().skip(11).take(2).map(|t| t.parse::<u64>().unwrap()).sum();
    ticks as f64 / 100.0
}

/// Part 1 (see the module docs): `runs` runs of `turns` turns through the ClickHouse sink
/// into the chDB front.
fn end_to_end(runs: usize, turns: usize) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let hwm_before = support::proc_status_mib("self", "VmHWM");
    let rss_before = support::proc_status_mib("self", "VmRSS");
    let front = Front::start();
    let front_pid = front.child.id().to_string();
    let front_rss_idle = support::proc_status_mib(&front_pid, "VmRSS");
    println!("end_to_end: chDB front at {} (pid {front_pid})", front.url);
    println!(
        "end_to_end: bench process before: peak RSS {hwm_before:.1} MiB, RSS {rss_before:.1} MiB; \
         front RSS idle {front_rss_idle:.1} MiB"
    );

    let mut rates = Vec::new();
    for run in 0..runs {
        let db = format!("bench_{}_{run}", std::process::id());
        let admin = front.client();
        rt.block_on(admin.query(&format!("CREATE DATABASE {db}")).execute())
            .unwrap_or_else(|e| panic!("CREATE DATABASE {db}: {e}\n{}", front.stderr_tail()));

        let data = tempfile::tempdir().unwrap();
        let mut config = Config { data_dir: data.path().to_path_buf(), ..Config::default() };
        config.metrics.enabled = false;
        config.logging.enabled = false;
        config.pipeline.when_full = WhenFull::Block;
        config.clickhouse.enabled = true;
        config.clickhouse.endpoint = Endpoint::parse(&front.url).unwrap();
        config.clickhouse.database = db.clone();
        config.clickhouse.compression = Compression::None;
        config.clickhouse.batch_size = 5000;
        let opts = RenderOptions {
            database: db.clone(),
            retention_days: config.clickhouse.retention_days,
            cluster: None,
        };
        rt.block_on(Migrator::new(serphona_obs::analytics::client(&config.clickhouse), opts, built_in()).apply())
            .unwrap_or_else(|e| panic!("schema apply on {db}: {e}\n{}", front.stderr_tail()));

        let obs = Observability::init(config).unwrap();
        let cpu = (cpu_seconds("self"), cpu_seconds(&front_pid));
        let started = Instant::now();
        let conversations = emit(&obs, turns);
        let emitted = started.elapsed();
        obs.shutdown(Duration::from_secs(120)).expect("shutdown within 120 s");
        let delivered = started.elapsed();
        let cpu = (cpu_seconds("self") - cpu.0, cpu_seconds(&front_pid) - cpu.1);

        // Every emitted turn and event must be in ClickHouse.
        let p = &obs.metrics().pipeline;
        let spooled = p.events_spooled.with_label_values(&["clickhouse"]).get();
        let retries = p.export_retries.with_label_values(&["clickhouse"]).get();
        let count = |table: &str| -> u64 {
            rt.block_on(admin.query(&format!("SELECT count() FROM {db}.{table}")).fetch_one::<u64>())
                .unwrap_or_else(|e| panic!("count() of {db}.{table}: {e}\n{}", front.stderr_tail()))
        };
        let (interactions, events) = (count("interactions"), count("events"));
        let total_events = (turns + 2 * conversations) as u64;
        assert!(
            interactions == turns as u64 && events == total_events,
            "end_to_end run {run}: ClickHouse has {interactions} interactions (emitted {turns}) and {events} \
             events (emitted {total_events}); spooled {spooled}, retries {retries}\nfront stderr:\n{}",
            front.stderr_tail()
        );

        let secs = delivered.as_secs_f64();
        rates.push(turns as f64 / secs);
        println!(
            "end_to_end run {run}: {turns} turns + {} start/end = {total_events} events; emit {:.3} s, delivered \
             {secs:.3} s => {:.0} turns/s, {:.0} events/s; retries {retries}, spooled {spooled}; CPU: bench process \
             {:.2} s, front {:.2} s; peak RSS {:.1} MiB; front RSS {:.1} MiB (peak {:.1} MiB)",
            2 * conversations,
            emitted.as_secs_f64(),
            turns as f64 / secs,
            total_events as f64 / secs,
            cpu.0,
            cpu.1,
            support::proc_status_mib("self", "VmHWM"),
            support::proc_status_mib(&front_pid, "VmRSS"),
            support::proc_status_mib(&front_pid, "VmHWM"),
        );
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "end_to_end: median {:.0} turns/s over {runs} run(s); bench process peak RSS {hwm_before:.1} -> {:.1} MiB",
        rates[rates.len() / 2],
        support::proc_status_mib("self", "VmHWM"),
    );
}

// --- part 2: encoding ----------------------------------------------------------------------

/// An HTTP/1.1 server on 127.0.0.1 (one thread per connection, keep-alive) that reads every
/// request whole, throws the body away and answers `200 OK` with an empty body. Counts the body
/// bytes it read (chunked framing excluded).
struct DiscardServer {
    url: String,
    body_bytes: Arc<AtomicU64>,
}

impl DiscardServer {
    fn start() -> DiscardServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let body_bytes = Arc::new(AtomicU64::new(0));
        let counter = body_bytes.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    if let Err(e) = discard_requests(stream, &counter) {
                        eprintln!("discard server: {e}");
                    }
                });
            }
        });
        DiscardServer { url, body_bytes }
    }
}

fn discard_requests(stream: TcpStream, body_bytes: &AtomicU64) -> io::Result<()> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(()); // the client closed the connection
        }
        let (mut chunked, mut length) = (false, 0u64);
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').ok_or_else(|| invalid(header))?;
            if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().map_err(|_| invalid(header))?;
            }
        }
        let mut read = 0;
        if chunked {
            loop {
                line.clear();
                reader.read_line(&mut line)?;
                let size = line.trim_end().split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(size, 16).map_err(|_| invalid(&line))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    while {
                        line.clear();
                        reader.read_line(&mut line)? > 0 && !line.trim_end().is_empty()
                    } {}
                    break;
                }
                read += discard(&mut reader, size)?;
                line.clear();
                reader.read_line(&mut line)?; // the CRLF after the chunk
            }
        } else {
            read = discard(&mut reader, length)?;
        }
        body_bytes.fetch_add(read, Ordering::Relaxed);
        out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?;
    }
}

/// Reads and drops `n` bytes, a buffer (256 KiB) at a time.
fn discard(reader: &mut impl BufRead, n: u64) -> io::Result<u64> {
    let mut left = n;
    while left > 0 {
        let available = reader.fill_buf()?.len();
        if available == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let take = available.min(usize::try_from(left).unwrap_or(usize::MAX));
        reader.consume(take);
        left -= take as u64;
    }
    Ok(n)
}

/// The `interactions` rows of `events`, inserted.
async fn insert_interactions(client: &clickhouse::Client, events: &[SharedEvent]) {
    let rows: Vec<InteractionRow<'_>> = events.iter().filter_map(|e| rows::interaction_row(e)).collect();
    insert_rows::<InteractionRow<'static>>(client, "interactions", &rows, "bench:interactions", INSERT_TIMEOUT)
        .await
        .unwrap();
}

/// What the sink inserts for a batch of turns: `events`, `interactions` and `spans` rows
/// (turns have no `conversations` or `decisions` rows), table by table.
async fn insert_turn_tables(client: &clickhouse::Client, events: &[SharedEvent]) {
    let rows: Vec<EventRow<'_>> = events.iter().filter_map(rows::event_row).collect();
    insert_rows::<EventRow<'static>>(client, "events", &rows, "bench:events", INSERT_TIMEOUT).await.unwrap();
    drop(rows);
    insert_interactions(client, events).await;
    let rows: Vec<SpanRow<'_>> = events.iter().filter_map(|e| rows::span_row(e)).collect();
    insert_rows::<SpanRow<'static>>(client, "spans", &rows, "bench:spans", INSERT_TIMEOUT).await.unwrap();
}

/// CPU time of the calling thread (`/proc/thread-self/schedstat`: nanoseconds on a CPU).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    Duration::from_nanos(stat.split_whitespace().next().and_then(|ns| ns.parse().ok()).unwrap())
}

/// The encoding benchmarks, after timing `timed_rows` rows of inserts of each size by hand.
fn encode(c: &mut Criterion, timed_rows: usize) {
    const SIZES: [usize; 2] = [1_000, 10_000];
    let events = turn_events(SIZES[1]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let server = DiscardServer::start();
    let client = clickhouse::Client::default()
        .with_url(&server.url)
        .with_compression(clickhouse::Compression::None)
        .with_validation(false);

    // Bytes per turn of each encoding (the RowBinary bodies as the server received them).
    let json: usize = events.iter().map(|e| serde_json::to_vec(e.event()).unwrap().len()).sum();
    let before = server.body_bytes.load(Ordering::Relaxed);
    rt.block_on(insert_interactions(&client, &events));
    let rowbinary = server.body_bytes.load(Ordering::Relaxed) - before;
    let before = server.body_bytes.load(Ordering::Relaxed);
    rt.block_on(insert_turn_tables(&client, &events));
    let all_tables = server.body_bytes.load(Ordering::Relaxed) - before;
    let per_turn = |bytes: u64| bytes as f64 / events.len() as f64;
    println!(
        "bytes per turn: JSON event log line {:.0}, interactions RowBinary {:.0}, \
         events+interactions+spans RowBinary {:.0}",
        json as f64 / events.len() as f64,
        per_turn(rowbinary),
        per_turn(all_tables),
    );

    // Per insert: wall time (median and 90th percentile) against the CPU time of this thread,
    // the client's: row building, RowBinary serialization and hyper's socket writes (the
    // server's reads run on their own thread).
    for n in SIZES {
        let (mut walls, cpu) = (Vec::new(), thread_cpu());
        for _ in 0..timed_rows / n {
            let started = Instant::now();
            rt.block_on(insert_interactions(&client, &events[..n]));
            walls.push(started.elapsed());
        }
        let cpu = (thread_cpu() - cpu) / walls.len() as u32;
        let total: Duration = walls.iter().sum();
        walls.sort();
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        println!(
            "interactions inserts of {n} rows, {} inserts: mean {:.0} rows/s; median insert {:.3} ms ({:.0} rows/s), \
             p90 {:.3} ms; client thread CPU {:.3} ms per insert ({:.0} rows/s)",
            walls.len(),
            rate(total / walls.len() as u32),
            walls[walls.len() / 2].as_secs_f64() * 1e3,
            rate(walls[walls.len() / 2]),
            walls[walls.len() * 9 / 10].as_secs_f64() * 1e3,
            cpu.as_secs_f64() * 1e3,
            rate(cpu),
        );
    }

    let mut group = c.benchmark_group("clickhouse_encode");
    group.measurement_time(Duration::from_secs(5));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(30);
    for n in SIZES {
        let batch = &events[..n];
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("json_event_log_baseline", n), batch, |b, batch| {
            b.iter(|| {
                for e in batch {
                    std::hint::black_box(serde_json::to_vec(e.event()).unwrap());
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("interaction_rows_only", n), batch, |b, batch| {
            b.iter(|| {
                let rows: Vec<InteractionRow<'_>> = batch.iter().filter_map(|e| rows::interaction_row(e)).collect();
                std::hint::black_box(rows);
            })
        });
        group.bench_with_input(BenchmarkId::new("interactions_rowbinary_insert", n), batch, |b, batch| {
            b.iter(|| rt.block_on(insert_interactions(&client, batch)))
        });
        group.bench_with_input(BenchmarkId::new("turn_all_tables_insert", n), batch, |b, batch| {
            b.iter(|| rt.block_on(insert_turn_tables(&client, batch)))
        });
    }
    group.finish();
}
