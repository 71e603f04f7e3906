//! The completion scripts in the real shell (issue 12, item 4): bash is given the script that
//! `serphona-obs completions bash` prints and asked for completions as it would be on Tab.
//! (zsh and fish are not installed on this machine; their scripts are only generated.)

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::support::bin;

/// The subcommands and long flags `serphona-obs <path> -h` lists.
fn help_of(path: &[String]) -> (Vec<String>, Vec<String>) {
    let out = bin().args(path).arg("-h").output().unwrap();
    assert!(out.status.success(), "{path:?} -h: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let command = regex::Regex::new(r"^  ([a-z][a-z0-9-]*)\s").unwrap();
    let flag = regex::Regex::new(r"^(?:  -\w, |      )--([a-z][a-z0-9-]*)").unwrap();
    let (mut subcommands, mut flags) = (Vec::new(), Vec::new());
    let mut section = "";
    for line in text.lines() {
        if !line.starts_with(' ') {
            section = line;
            continue;
        }
        if section == "Commands:" {
            if let Some(c) = command.captures(line) {
                subcommands.push(c[1].to_string());
            }
        } else if section == "Options:" {
            if let Some(c) = flag.captures(line) {
                flags.push(format!("--{}", &c[1]));
            }
        }
    }
    (subcommands, flags)
}

/// What bash offers on Tab after `words` (the last one is the word being completed), with the
/// completion function the script registers for `serphona-obs`.
fn complete(script: &Path, words: &[&str]) -> BTreeSet<String> {
    let program = r#"
source "$1"; shift
spec=$(complete -p serphona-obs) || { echo "no completion registered for serphona-obs" >&2; exit 3; }
fn=$(sed -E 's/.*-F ([^ ]+).*/\1/' <<<"$spec")
COMP_WORDS=("$@")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="${COMP_WORDS[*]}"
COMP_POINT=${#COMP_LINE}
"$fn" serphona-obs "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let out = Command::new("bash").args(["--norc", "--noprofile", "-c", program, "bash"]).arg(script).args(words).output().unwrap();
    assert!(out.status.success(), "bash for {words:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
}

// Regression test for issue 12, item 4: bash completed only the first word (the script's case
// labels did not match the names its loop gives the subcommands), so `query <Tab>` listed files.
#[test]
fn bash_completes_every_subcommand_and_flag_at_every_level() {
    let out = bin().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("serphona-obs.bash");
    std::fs::write(&script, &out.stdout).unwrap();

    // Every command path, from the binary's own help.
    let mut paths: Vec<Vec<String>> = vec![vec![]];
    let mut checked = 0;
    while let Some(path) = paths.pop() {
        let (subcommands, flags) = help_of(&path);
        let mut words: Vec<&str> = std::iter::once("serphona-obs").chain(path.iter().map(String::as_str)).collect();
        if !subcommands.is_empty() {
            words.push("");
            let offered = complete(&script, &words);
            for sub in &subcommands {
                assert!(offered.contains(sub), "`serphona-obs {} <Tab>` does not offer {sub}: {offered:?}", path.join(" "));
            }
            words.pop();
        }
        words.push("--");
        let offered = complete(&script, &words);
        for flag in &flags {
            assert!(offered.contains(flag), "`serphona-obs {} --<Tab>` does not offer {flag}: {offered:?}", path.join(" "));
        }
        checked += 1;
        // `help`'s own tree repeats the others without flags.
        for sub in subcommands.into_iter().filter(|s| s != "help") {
            let mut next = path.clone();
            next.push(sub);
            paths.push(next);
        }
    }
    assert!(checked >= 20, "only {checked} commands found in the help");

    // Values of flags and arguments, below the first level, with a global flag in front.
    for (words, expected) in [
        (&["serphona-obs", "query", "st"][..], &["stats"][..]),
        (&["serphona-obs", "--data-dir", "/tmp/x", "query", "stats", "--by", ""], &["tenant", "agent", "channel", "resolution"]),
        (&["serphona-obs", "query", "conversations", "-o", ""], &["table", "json", "csv"]),
        (&["serphona-obs", "up", "--backend", ""], &["docker", "native"]),
        (&["serphona-obs", "completions", ""], &["bash", "zsh", "fish"]),
        (&["serphona-obs", "schema", "status", "--o"], &["--output"]),
    ] {
        let offered = complete(&script, words);
        for e in expected {
            assert!(offered.contains(*e), "{words:?} does not offer {e}: {offered:?}");
        }
    }
}

#[test]
fn every_shell_gets_a_script_naming_the_binary() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = bin().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains("serphona-obs") && script.contains("query") && script.contains("group-by"), "{shell}");
    }
}
