//! The live waiting line on a terminal: one line cut to the terminal's
//! width, none for `TERM=dumb`, gone before the command starts.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Sandbox, WAIT, bin, wait_until};

/// A holder whose command line is far longer than a 60-column terminal,
/// with multi-byte, double-width and control characters in it.
fn long_holder(sb: &Sandbox, lock: &str) -> common::Holder {
    let setup = format!(
        ": {} {} {} \"$(printf 'bell\\007esc\\033[31m')\"",
        "word ".repeat(30),
        "é".repeat(40),
        "漢".repeat(40)
    );
    sb.hold_after(&[], lock, &setup)
}

/// A tmux server of its own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` in a detached 60x20 pane, or None without tmux.
    fn start(sb: &Sandbox, command: &str) -> Option<Tmux> {
        Tmux::start_sized(sb, command, 60)
    }

    /// Starts `command` in a detached pane `columns` wide and 20 rows high,
    /// or None without tmux.
    fn start_sized(sb: &Sandbox, command: &str, columns: u16) -> Option<Tmux> {
        if !Path::new("/usr/bin/tmux").exists() {
            eprintln!("skipped: tmux is not installed");
            return None;
        }
        let tmux = Tmux {
            socket: sb.abstract_name("tmux"),
        };
        let status = tmux
            .command()
            .args([
                "new-session",
                "-d",
                "-x",
                &columns.to_string(),
                "-y",
                "20",
                command,
            ])
            .status()
            .expect("tmux");
        assert!(status.success(), "tmux new-session failed");
        Some(tmux)
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .env_remove("TMUX")
            .stdin(Stdio::null());
        command
    }

    /// The pane's rows as shown, trailing blanks removed.
    fn screen(&self) -> Vec<String> {
        let out = self
            .command()
            .args(["capture-pane", "-p"])
            .output()
            .expect("tmux capture-pane");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut rows: Vec<String> = text.lines().map(|l| l.trim_end().to_owned()).collect();
        while rows.last().is_some_and(|r| r.is_empty()) {
            rows.pop();
        }
        rows
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

#[test]
fn the_waiting_line_stays_on_one_row_of_a_60_column_terminal_and_is_cleared() {
    let sb = Sandbox::new("tmux-line");
    let lock = sb.locks.join("line").display().to_string();
    let mut holder = long_holder(&sb, &lock);
    let done = sb.work_path("done");
    // A short lock name, so that the row has room for the holder.
    let command = format!(
        "cd '{}' && '{}' -w 60 line echo the-command-ran; touch '{}'; sleep 60",
        sb.locks.display(),
        bin().display(),
        done.display()
    );
    let Some(tmux) = Tmux::start(&sb, &command) else {
        return;
    };
    // Three draws at least (1s, 2s, 3s): a line that wrapped would have
    // left rows behind by then.
    let mut screen = Vec::new();
    wait_until("the waiting line at 3s", WAIT, || {
        screen = tmux.screen();
        screen.iter().any(|r| r.contains("waiting 3s"))
    });
    assert_eq!(screen.len(), 1, "{screen:#?}");
    let row = &screen[0];
    assert!(
        row.starts_with("lockwrap: line: waiting 3s; held by pid") && row.ends_with('…'),
        "{screen:#?}"
    );
    assert!(row.chars().count() <= 59, "{screen:#?}");
    holder.release_and_finish().assert_code(0);
    common::wait_for_file(&done, WAIT);
    let screen = tmux.screen();
    assert_eq!(screen, ["the-command-ran"], "{screen:#?}");
}

/// Emoji and other wide characters beyond the first Unicode blocks (U+1FAE0
/// melting face, U+1F004 mahjong tile, U+1F18E, U+1F201, U+1F7E0, Tangut,
/// a heart made wide by U+FE0F) count two columns too: counted as one, the
/// row overflowed and every draw left a row behind.
#[test]
fn the_waiting_line_counts_every_emoji_as_two_columns() {
    let sb = Sandbox::new("tmux-emoji");
    let lock = sb.locks.join("emoji").display().to_string();
    let wide = "\u{1fae0}\u{1f004}\u{1f18e}\u{1f201}\u{1f7e0}\u{17000}\u{2764}\u{fe0f}";
    let mut holder = sb.hold_after(&[], &lock, &format!(": {}", wide.repeat(20)));
    let done = sb.work_path("done");
    let command = format!(
        "cd '{}' && LANG=C.UTF-8 '{}' -w 60 emoji true; touch '{}'; sleep 60",
        sb.locks.display(),
        bin().display(),
        done.display()
    );
    let Some(tmux) = Tmux::start_sized(&sb, &command, 200) else {
        return;
    };
    let mut screen = Vec::new();
    wait_until("the waiting line at 3s", WAIT, || {
        screen = tmux.screen();
        screen.iter().any(|r| r.contains("waiting 3s"))
    });
    assert_eq!(screen.len(), 1, "{screen:#?}");
    assert!(screen[0].contains('\u{1fae0}'), "{screen:#?}");
    holder.release_and_finish().assert_code(0);
    common::wait_for_file(&done, WAIT);
}

#[test]
fn no_waiting_line_for_term_dumb() {
    let Some(script) = ["/usr/bin/script", "/bin/script"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        eprintln!("skipped: script(1) from util-linux is not installed");
        return;
    };
    let sb = Sandbox::new("dumb-line");
    let lock = sb.locks.join("dumb").display().to_string();
    let mut holder = long_holder(&sb, &lock);
    let run = |term: &str, label: &str| {
        let screen = sb.work_path(label);
        let inner = format!("TERM={term} '{}' -w 60 '{lock}' true", bin().display());
        use std::os::unix::process::CommandExt as _;
        let child = Command::new(script)
            .args(["-qefc", &inner, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&screen).unwrap())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("script(1)");
        (child, screen)
    };
    // The dumb terminal's waiter starts first; once the other has drawn
    // twice, the first would have drawn too.
    let (mut dumb, dumb_screen) = run("dumb", "dumb.screen");
    let (mut xterm, xterm_screen) = run("xterm", "xterm.screen");
    wait_until("two draws on the xterm", WAIT, || {
        std::fs::read_to_string(&xterm_screen)
            .unwrap_or_default()
            .contains("waiting 2s")
    });
    let shown = std::fs::read_to_string(&dumb_screen).unwrap();
    holder.release_and_finish().assert_code(0);
    for child in [&mut dumb, &mut xterm] {
        let ended = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if !ended {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
        }
    }
    assert_eq!(shown, "", "TERM=dumb drew: {shown:?}");
}

/// A waiter started in the background of a shell with job control draws no
/// line: it would erase the prompt and what the user types every second,
/// and with `stty tostop` its first draw would stop it (SIGTTOU, "Stopped
/// (tty output)"), so that it never ran its command, where flock(1) would.
#[test]
fn a_background_waiter_draws_nothing_and_is_not_stopped_by_tostop() {
    let Some(script) = ["/usr/bin/script", "/bin/script"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        eprintln!("skipped: script(1) from util-linux is not installed");
        return;
    };
    if !Path::new("/bin/bash").exists() {
        eprintln!("skipped: bash is not installed");
        return;
    }
    let sb = Sandbox::new("background-line");
    let lock = sb.locks.join("bg").display().to_string();
    let mut holder = long_holder(&sb, &lock);
    let ran = sb.work_path("ran");
    let screen = sb.work_path("screen");
    let lockwrap = bin().display().to_string();
    // The background waiter starts first; once the foreground one has
    // drawn twice, the background one would have drawn at least once.
    let inner = format!(
        "stty tostop; '{lockwrap}' -w 60 '{lock}' touch '{ran}' & \
         '{lockwrap}' -w 60 '{lock}' echo foreground-ran; wait; echo all-done",
        ran = ran.display()
    );
    use std::os::unix::process::CommandExt as _;
    let mut child = Command::new(script)
        .args(["-qefc", &format!("bash -mc \"{inner}\""), "/dev/null"])
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&screen).unwrap())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("script(1)");
    wait_until("two draws in the foreground", WAIT, || {
        std::fs::read_to_string(&screen)
            .unwrap_or_default()
            .contains("waiting 2s")
    });
    holder.release_and_finish().assert_code(0);
    wait_until("the end of the shell", WAIT, || {
        std::fs::read_to_string(&screen)
            .unwrap_or_default()
            .contains("all-done")
    });
    let shown = std::fs::read_to_string(&screen).unwrap();
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = child.wait();
    assert!(ran.exists(), "the background waiter never ran: {shown:?}");
    assert_eq!(
        shown.matches("waiting 1s").count(),
        1,
        "only the foreground waiter draws: {shown:?}"
    );
}
