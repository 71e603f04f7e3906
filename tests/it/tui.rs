//! The real binary's live view on a real terminal: `serphona-obs demo` in tmux at 160×48
//! (issue 5), and `tail` without a terminal.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::{bin, which};

/// A tmux server of its own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(width: u16, height: u16, dir: &Path) -> Tmux {
        which("tmux").expect("tmux is not installed: scripts/test.sh installs it (apt-get install tmux)");
        let socket = format!("serphona-obs-test-{}-{}", std::process::id(), dir.file_name().unwrap().to_string_lossy());
        let tmux = Tmux { socket };
        let out = tmux.cmd(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "env",
            "PS1=serphona-test$ ",
            "TERM=xterm-256color",
            "bash",
            "--norc",
            "--noprofile",
        ]);
        assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
        tmux
    }

    fn cmd(&self, args: &[&str]) -> Output {
        Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("run tmux")
    }

    fn keys(&self, keys: &[&str]) {
        for key in keys {
            let out = self.cmd(&["send-keys", "-t", "t", key]);
            assert!(out.status.success(), "send-keys {key}: {}", String::from_utf8_lossy(&out.stderr));
            // Separate key presses (an Esc followed at once by a key reads as Alt+key).
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn type_line(&self, line: &str) {
        let out = self.cmd(&["send-keys", "-t", "t", "-l", line]);
        assert!(out.status.success());
        self.keys(&["Enter"]);
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "t"]).stdout).into_owned()
    }

    /// Waits until `check` holds for the screen; panics with the last screen after `secs`.
    fn wait_for(&self, what: &str, secs: u64, check: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            if Instant::now() > until {
                panic!("timed out after {secs}s waiting for {what}; the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// Rows of the conversation list (the left pane, 96 of 160 columns): lines with a live or ended
/// marker.
fn list_rows(screen: &str) -> Vec<String> {
    screen
        .lines()
        .map(|l| l.chars().take(96).collect::<String>())
        .filter(|l| l.contains('●') || l.contains('■'))
        .collect()
}

/// The conversation id cell of the selected row (the one with ▶).
fn selected_id(screen: &str) -> Option<String> {
    list_rows(screen)
        .into_iter()
        .find(|l| l.contains('▶'))
        // After the marker and the ↯ ✗ ⇢ markers (issue 16): the first word that is an id.
        .and_then(|l| {
            l.split_whitespace()
                .find(|w| w.len() >= 8 && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
                .map(str::to_string)
        })
}

/// Speakers shown in the transcript (the right pane).
fn transcript_speakers(screen: &str) -> (bool, bool) {
    let right: Vec<String> = screen.lines().map(|l| l.chars().skip(96).collect()).collect();
    let is = |who: &str| {
        right.iter().any(|l| {
            let words: Vec<&str> = l.trim_start_matches(['│', '┃']).split_whitespace().collect();
            words.len() >= 2 && words[0].len() == 8 && words[0].chars().nth(2) == Some(':') && words[1] == who
        })
    };
    (is("agent"), is("customer"))
}

#[test]
fn demo_live_view_in_tmux_shows_conversations_and_transcripts_and_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let tmux = Tmux::start(160, 48, dir.path());
    tmux.wait_for("the shell prompt", 10, |s| s.contains("serphona-test$"));
    let command = format!(
        "{} demo --data-dir {} --metrics-addr 127.0.0.1:0 --conversations 200; echo SERPHONA_EXIT=$?",
        env!("CARGO_BIN_EXE_serphona-obs"),
        dir.path().display()
    );
    tmux.type_line(&command);

    // The header, at least 5 conversations, and a transcript with both speakers (moving down
    // the list while the selected one has only one speaker so far).
    let screen = tmux.wait_for("the header and 5 conversations", 30, |s| {
        s.contains("events/s") && s.contains("active") && s.contains("Conversations") && list_rows(s).len() >= 5
    });
    assert!(screen.contains("Transcript"), "{screen}");
    let until = Instant::now() + Duration::from_secs(40);
    let mut last_move = Instant::now();
    while transcript_speakers(&tmux.screen()) != (true, true) {
        assert!(Instant::now() < until, "no transcript with both speakers; the screen:\n{}", tmux.screen());
        if last_move.elapsed() > Duration::from_secs(4) {
            tmux.keys(&["j"]);
            last_move = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(300));
    }

    // j moves the selection to another conversation (from the top of the list: g).
    tmux.keys(&["g"]);
    // (New conversations keep arriving above it, so it is near the top, not always first.)
    let top =
        tmux.wait_for("g to select a row near the top", 5, |s| list_rows(s).iter().take(10).any(|r| r.contains('▶')));
    let before = selected_id(&top).expect("a selected row");
    tmux.keys(&["j"]);
    tmux.wait_for("j to select another conversation", 5, |s| selected_id(s).is_some_and(|id| id != before));

    // Enter focuses the transcript (its border turns heavy); Esc goes back.
    tmux.keys(&["Enter"]);
    tmux.wait_for("the focused transcript", 5, |s| s.contains("┏ Transcript"));
    tmux.keys(&["Escape"]);
    tmux.wait_for("the focused list", 5, |s| s.contains("┏ Conversations"));

    // / opens the filter; typing filters the list by tenant.
    tmux.keys(&["/"]);
    tmux.wait_for("the filter prompt", 5, |s| s.contains("/ filter:"));
    for key in ["t", "e", "n", "a", "n", "t", ":", "a", "c", "m", "e", "-", "t", "e", "l", "c", "o"] {
        tmux.keys(&[key]);
    }
    let filtered = tmux.wait_for("the filtered list", 5, |s| s.contains("filter: tenant:acme-telco"));
    let rows = list_rows(&filtered);
    assert!(!rows.is_empty() && rows.iter().all(|r| r.contains("acme-telco")), "{filtered}");
    tmux.keys(&["Enter"]);

    // q quits with 0, the summary follows and the shell prompt is back on a normal screen.
    tmux.keys(&["q"]);
    let screen = tmux.wait_for("exit code and prompt", 30, |s| {
        s.contains("SERPHONA_EXIT=") && s.trim_end().ends_with("serphona-test$")
    });
    assert!(screen.contains("SERPHONA_EXIT=0"), "{screen}");
    assert!(
        screen.contains("p95 duration") && screen.contains("total"),
        "the summary table follows the view:\n{screen}"
    );
    assert!(!screen.contains("events/s"), "the live view is gone from the screen:\n{screen}");
}

// Regression test for issue 12, items 1 and 2: the paced demo dated events minutes ahead of
// the wall clock, and on `q` ended open conversations before their own turns (durations of
// 0.0, a p50 of `0.0s`); nothing showed how far the run was.
#[test]
fn demo_quit_early_in_tmux_leaves_no_event_in_the_future_or_after_its_end_and_the_summary_matches_query_stats() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tmux = Tmux::start(160, 48, dir.path());
    tmux.wait_for("the shell prompt", 10, |s| s.contains("serphona-test$"));
    let command = format!(
        "{} demo --data-dir {} --metrics-addr 127.0.0.1:0 --conversations 200 --output json; echo SERPHONA_EXIT=$?",
        env!("CARGO_BIN_EXE_serphona-obs"),
        data.display()
    );
    let started = Instant::now();
    tmux.type_line(&command);
    // The progress and the hint that q ends the run.
    tmux.wait_for("the progress status", 30, |s| s.contains("/200 ended · q ends") && list_rows(s).len() >= 5);
    if let Some(rest) = Duration::from_secs(5).checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    tmux.keys(&["q"]);
    tmux.wait_for("exit code and prompt", 30, |s| {
        s.contains("SERPHONA_EXIT=") && s.trim_end().ends_with("serphona-test$")
    });
    let quit = time::OffsetDateTime::now_utc();
    let history =
        String::from_utf8_lossy(&tmux.cmd(&["capture-pane", "-p", "-J", "-S", "-1000", "-t", "t"]).stdout).into_owned();
    assert!(history.contains("SERPHONA_EXIT=0"), "{history}");
    let lines: Vec<&str> = history.lines().collect();
    let open = lines.iter().position(|l| *l == "{").unwrap_or_else(|| panic!("no JSON summary:\n{history}"));
    let close = open + lines[open..].iter().position(|l| *l == "}").expect("the JSON summary ends");
    let summary: serde_json::Value =
        serde_json::from_str(&lines[open..=close].join("\n")).expect("the summary is JSON");

    // The event log: nothing dated after the run, nothing of a conversation after its end.
    let parse = |v: &serde_json::Value| {
        time::OffsetDateTime::parse(v.as_str().expect("a timestamp"), &time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let mut events: std::collections::BTreeMap<String, Vec<serde_json::Value>> = Default::default();
    for (_, path) in serphona_obs::sinks::event_log::list_segments(&serphona_obs::sinks::event_log::event_log_dir(&data)).unwrap() {
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(parse(&event["timestamp"]) <= quit, "an event dated after the run ended at {quit}: {event}");
            events.entry(event["conversation_id"].as_str().unwrap().to_string()).or_default().push(event);
        }
    }
    assert!(events.len() >= 5, "{} conversations in the log", events.len());
    let mut interrupted = 0;
    for (id, events) in &events {
        let end = events
            .iter()
            .find(|e| e["event_type"] == "conversation.ended")
            .unwrap_or_else(|| panic!("{id} never ended"));
        let start = events.iter().find(|e| e["event_type"] == "conversation.started").expect("a start");
        let (start_at, end_at) = (parse(&start["timestamp"]), parse(&end["timestamp"]));
        for e in events {
            assert!(parse(&e["timestamp"]) <= end_at, "{id}: {} after its end: {e}", e["event_type"]);
        }
        let duration = end["duration_seconds"].as_f64().unwrap();
        assert!((duration - (end_at - start_at).as_seconds_f64()).abs() < 0.002, "{id}: duration {duration}");
        interrupted += usize::from(end["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == "interrupted")));
    }
    assert!(interrupted > 0, "q ended some conversations in progress");

    // The summary's durations are `query stats`'.
    let out = bin().args(["--data-dir"]).arg(&data).args(["query", "stats", "-o", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let all = stats.as_array().unwrap().iter().find(|r| r["group"] == "all").expect("an all row");
    assert_eq!(
        summary["total"]["duration_seconds"], all["duration_seconds"],
        "summary {} vs query stats {all}",
        summary["total"]
    );
    assert!(all["duration_seconds"]["p50"].as_f64().is_some_and(|p| p > 0.0), "p50 duration {all}");
}

#[test]
fn tail_without_a_terminal_says_so_and_streams_json_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = bin()
        .args(["demo", "--no-tui", "-n", "20", "--data-dir", d, "--metrics-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out = bin().args(["tail", "--data-dir", d]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--output json"), "{}", String::from_utf8_lossy(&out.stderr));

    let all = serphona_obs::store::local::LocalStore::open(dir.path()).read_all().unwrap();
    let out =
        bin().args(["tail", "--data-dir", d, "--source", "local", "--output", "json", "--no-follow"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serphona_obs::types::Event> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serphona_obs::types::Event::from_json(l).unwrap())
        .collect();
    assert_eq!(lines, all, "every event of the log, once, in order");

    // Pre-filters: one tenant; one channel keeps whole conversations of that channel.
    let tenant = all[0].tenant_id.to_string();
    let out =
        bin().args(["tail", "--data-dir", d, "--output", "json", "--no-follow", "--tenant", &tenant]).output().unwrap();
    let got: Vec<serphona_obs::types::Event> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serphona_obs::types::Event::from_json(l).unwrap())
        .collect();
    assert_eq!(got.len(), all.iter().filter(|e| *e.tenant_id == *tenant).count());
    assert!(!got.is_empty() && got.len() < all.len());

    // stdin: a service's logs with other lines among the events.
    let mut input = String::from("not json\n{\"msg\":\"a log line of the service\"}\n");
    for e in &all[..10] {
        input.push_str(&e.to_json().unwrap());
        input.push('\n');
    }
    let mut child = bin()
        .args(["tail", "-", "--output", "json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 10);
}

#[test]
fn tail_follows_clickhouse_across_polls_without_duplicates_or_gaps() {
    use std::io::BufRead;
    use std::sync::{Arc, Mutex};

    let ch = crate::support::clickhouse::ClickHouse::start();
    let db = ch.fresh_database();
    let dir = tempfile::tempdir().unwrap();
    ch.apply_schema(&db, dir.path());

    let mut child = ch
        .cli(&db, dir.path())
        .args(["tail", "--source", "clickhouse", "--output", "json", "--since", "1h"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                lines.lock().unwrap().push(line.unwrap());
            }
        })
    };

    // Three runs, a second apart, while tail polls.
    for seed in 1..=3 {
        let out = ch
            .cli(&db, dir.path())
            .env("SERPHONA_OBS_CLICKHOUSE_ENABLED", "true")
            .args(["simulate", "-n", "40", "--seed", &seed.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_secs(1));
    }
    let logged = serphona_obs::store::local::LocalStore::open(dir.path()).read_all().unwrap();
    let in_ch = ch.query_u64(&format!("SELECT count(DISTINCT event_id) FROM {db}.events"));
    assert_eq!(in_ch, logged.len() as u64, "every logged event is in ClickHouse");
    let until = Instant::now() + Duration::from_secs(60);
    while lines.lock().unwrap().len() < logged.len() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Two more polls: nothing may arrive twice.
    std::thread::sleep(Duration::from_secs(2));
    let _ = child.kill();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let got = lines.lock().unwrap().clone();
    let mut ids: Vec<uuid::Uuid> =
        got.iter().map(|l| serphona_obs::types::Event::from_json(l).unwrap().event_id).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    let mut want: Vec<uuid::Uuid> = logged.iter().map(|e| e.event_id).collect();
    want.sort();
    assert_eq!(n, ids.len(), "duplicates: {} lines, {} distinct (tail {status:?})", n, ids.len());
    assert_eq!(ids, want, "tail saw every event once: {} of {}", ids.len(), want.len());
}

/// Writes, through the library into the event log under `data`, a voice call whose reply
/// carries every latency part with its tokens, and whose next reply the customer barges in
/// on; and three chat conversations beside it. Returns the voice call's id.
fn write_voice_call_log(data: &Path) -> String {
    use serphona_obs::types::*;
    let mut config = serphona_obs::Config { data_dir: data.to_path_buf(), ..serphona_obs::Config::default() };
    config.metrics.enabled = false;
    config.tracing.enabled = false;
    let obs = serphona_obs::Observability::builder(config).build().unwrap();
    let t0 = time::OffsetDateTime::now_utc() - time::Duration::minutes(2);
    let at = |ms: i64| t0 + time::Duration::milliseconds(ms);
    for n in 0..3 {
        let chat = obs.start_conversation(ConversationStart::new("globex-bank", "globex-chat-bot", format!("c{n}"), Channel::Chat).at(at(n * 100)));
        chat.track_interaction(Interaction::customer("Where is my card?").at(at(n * 100 + 1000)));
        chat.track_interaction(Interaction::agent("It was posted yesterday.").at(at(n * 100 + 2000)));
        chat.end(ConversationEnd::new(Resolution::Resolved).at(at(n * 100 + 3000)));
    }
    let call = obs.start_conversation(ConversationStart::new("acme-telco", "acme-voice-bot", "cust-42", Channel::Voice).at(at(5000)));
    let id = call.id().to_string();
    call.track_interaction(Interaction::agent("Thanks for calling Acme, how can I help?").duration_ms(2000.0).at(at(5900)));
    call.track_interaction(
        Interaction::customer("Why is my bill so high this month?")
            .duration_ms(1800.0)
            .at(at(9000))
            .latency(TurnLatency { stt_ms: Some(140.0), ..TurnLatency::default() }),
    );
    call.track_interaction(
        Interaction::agent("Let me check your latest invoice.")
            .duration_ms(2500.0)
            .at(at(12_200))
            .latency(TurnLatency {
                stt_ms: Some(180.0),
                end_of_utterance_ms: Some(320.0),
                llm_ttft_ms: Some(610.0),
                tool_ms: Some(240.0),
                tts_ttfb_ms: Some(210.0),
                response_ms: Some(1620.0),
                ..TurnLatency::default()
            })
            .usage(Usage::llm("gpt-4o-mini", 812, 64)),
    );
    call.track_interaction(
        Interaction::agent("I see a one-time installation charge of forty dollars, which")
            .duration_ms(3000.0)
            .at(at(15_500))
            .interrupted_by(TurnSpeaker::Customer, Some(600.0))
            .usage(Usage::llm("gpt-4o-mini", 1204, 96)),
    );
    call.track_interaction(Interaction::customer("I want to talk to a person.").duration_ms(1500.0).at(at(17_900)));
    call.end(ConversationEnd::new(Resolution::Transferred).at(at(20_000)));
    obs.shutdown(Duration::from_secs(10)).unwrap();
    id
}

// Issue 16: the real binary's live view, at 160×48 and at 80×24, shows a voice turn's
// latency breakdown (the bar and its legend), the interruption marker in the list and the
// barge-in in the transcript, and the conversation's cost in the transcript's title; `/`
// finds the call by `interrupted` and by `resolution:transferred`.
#[test]
fn tail_in_tmux_shows_a_voice_turns_breakdown_and_an_interruption_marker_at_160x48_and_80x24() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let id = write_voice_call_log(&data);
    let short = &id[id.len() - 12..];
    for (width, height) in [(160u16, 48u16), (80, 24)] {
        let sub = dir.path().join(format!("{width}x{height}"));
        std::fs::create_dir_all(&sub).unwrap();
        let tmux = Tmux::start(width, height, &sub);
        tmux.wait_for("the shell prompt", 10, |s| s.contains("serphona-test$"));
        tmux.type_line(&format!(
            "{} tail --data-dir {} --source local; echo SERPHONA_EXIT=$?",
            env!("CARGO_BIN_EXE_serphona-obs"),
            data.display()
        ));
        let row = |s: &str| s.lines().find(|l| l.contains(short) && (l.contains('■') || l.contains('●'))).map(str::to_string);
        let screen = tmux.wait_for("the voice call in the list", 30, |s| row(s).is_some() && s.contains("4 shown"));
        let call = row(&screen).unwrap();
        assert!(call.contains('↯') && call.contains('⇢'), "interrupted and transferred markers ({width}x{height}):\n{screen}");
        let chats: Vec<&str> = screen.lines().filter(|l| l.contains("globex-bank") && l.contains('■')).collect();
        assert!(chats.len() == 3 && chats.iter().all(|l| !l.contains('↯')), "{screen}");
        // The filter finds it by its interruption, then by its resolution.
        tmux.keys(&["/"]);
        tmux.cmd(&["send-keys", "-t", "t", "-l", "interrupted"]);
        tmux.keys(&["Enter"]);
        tmux.wait_for("only the voice call", 5, |s| s.contains("1 shown") && row(s).is_some_and(|r| r.contains('▶')));
        tmux.keys(&["/"]);
        for _ in 0.."interrupted".len() {
            tmux.cmd(&["send-keys", "-t", "t", "BSpace"]);
        }
        tmux.cmd(&["send-keys", "-t", "t", "-l", "resolution:transferred"]);
        tmux.keys(&["Enter"]);
        tmux.wait_for("the transferred call", 5, |s| s.contains("filter: resolution:transferred") && s.contains("1 shown"));
        // Its transcript: scrolled up until the reply with every part is on screen.
        tmux.keys(&["Enter"]);
        let whole = |s: &str| s.contains("replied in 1.62s") && s.contains("▚tool 240ms");
        let mut screen = tmux.wait_for("the focused transcript", 5, |s| s.contains("┏ Transcript"));
        for _ in 0..30 {
            if whole(&screen) {
                break;
            }
            tmux.keys(&["k"]);
            screen = tmux.screen();
        }
        assert!(screen.contains("replied in 1.62s") && screen.contains("░░▒▒▒▓▓▓▓▓▓▚▚██·"), "the bar ({width}x{height}):\n{screen}");
        // The legend, wrapped where the pane is narrow.
        assert!(
            screen.contains("░stt 180ms ▒eou 320ms ▓llm 610ms") && screen.contains("▚tool 240ms █tts 210ms"),
            "the legend ({width}x{height}):\n{screen}"
        );
        // The cost in the title: 812 in and 64 out, and 1204 in and 96 out, of gpt-4o-mini.
        assert!(screen.contains("$0.0004 · 2.0k→160 tok · ↯1"), "the title ({width}x{height}):\n{screen}");
        if height >= 48 {
            assert!(screen.contains("↯ customer barged in (600ms overlap)"), "{screen}");
        } else {
            // At 80×24 the barge-in is further down: scrolled back to the bottom.
            tmux.keys(&["G"]);
            tmux.wait_for("the barge-in", 5, |s| s.contains("↯ customer barged in (600ms overlap)"));
        }
        tmux.keys(&["q"]);
        let screen = tmux.wait_for("exit code and prompt", 15, |s| s.contains("SERPHONA_EXIT="));
        assert!(screen.contains("SERPHONA_EXIT=0"), "{screen}");
    }
}
