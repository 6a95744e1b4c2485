//! The command line (contract §5): parse, set up logging, run one command, and map its outcome to
//! an exit status in one place ([`Error::exit`]). Errors are one line on stderr.
//!
//! * [`args`]: the clap definitions.
//! * [`options`]: flags to validated values (N, the Kafka connection, open options).
//! * [`commands`]: `run`, `produce`, `state`, `partition`, `plan`, `topics`, `demo`, `bench`.
//! * [`replay`]: `export`, `replay`, `repartition`.
//! * [`error`]: why a command failed, and its exit status.

pub mod args;
pub mod commands;
pub mod error;
pub mod options;
pub mod replay;
pub mod sources;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

pub use args::{Cli, Command};
pub use error::Error;

/// A command-line error of clap (a message, indented details, a usage block, tips) as one
/// line, as every other error: `ordo: error: <message and details>; see `ordo <command>
/// --help``.
fn one_line(rendered: &str, command: Option<&str>) -> String {
    let mut message = Vec::new();
    let mut usage = None;
    for line in rendered.lines() {
        if let Some(u) = line.strip_prefix("Usage: ") {
            let words: Vec<&str> = u
                .split_whitespace()
                .take_while(|w| !w.starts_with(['-', '[', '<']))
                .collect();
            usage = Some(words.join(" "));
            break;
        }
        let line = line.trim();
        if !line.is_empty()
            && !line.starts_with("tip:")
            && !line.starts_with("For more information")
        {
            message.push(line.strip_prefix("error: ").unwrap_or(line));
        }
    }
    let help = format!(
        "{} --help",
        command
            .map(str::to_owned)
            .or(usage)
            .unwrap_or_else(|| "ordo".into())
    );
    format!(
        "ordo: error: {}; see `{help}`",
        message.join(" ").trim_end_matches('.')
    )
}

/// Parses the command line, runs the command, and returns the exit status.
pub fn main() -> ExitCode {
    let cmd = sources::command(Cli::command());
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let parsed = cmd
        .clone()
        .try_get_matches_from(&argv)
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let e = sources::name_variable(e, &cmd, &argv);
            if !e.use_stderr() {
                // --help and --version.
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let sub = argv
                .get(1)
                .and_then(|a| cmd.find_subcommand(a))
                .map(|c| format!("ordo {}", c.get_name()));
            eprintln!("{}", one_line(&e.render().to_string(), sub.as_deref()));
            return ExitCode::from(2);
        }
    };
    let default = match cli.command {
        Command::Run(_) => "info",
        _ => "warn",
    };
    let filter = match tracing_subscriber::EnvFilter::try_new(cli.log.as_deref().unwrap_or(default))
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ordo: error: invalid --log filter: {e}; use e.g. `info` or `ordo=debug`");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    sources::install(sources::Sources::of(&cmd, &matches));
    quiet_panics();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| execute(cli.command)));
    // The clients closing on their own threads finish first (their last log lines come
    // before the error line, which stays the last).
    crate::log::wait_for_closes(std::time::Duration::from_secs(5));
    exit_code(outcome)
}

/// What a command's outcome (or its panic) says, and its exit status.
fn exit_code(outcome: std::thread::Result<Result<(), Error>>) -> ExitCode {
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            if !e.is_quiet() {
                eprintln!("ordo: error: {e}");
            }
            e.exit()
        }
        Err(_) => {
            let store = crate::log::opened_store()
                .map_or_else(|| "ordo.redb".to_owned(), |p| p.display().to_string());
            eprintln!(
                "ordo: error: {}; where it came from the data dir's store, {store} may be \
                 damaged: restore it from a .bak, or, where only the state is damaged, rebuild \
                 it from the input with `ordo replay --apply`",
                last_panic().unwrap_or_else(|| "internal error".to_owned())
            );
            ExitCode::from(1)
        }
    }
}

/// The message and place of the latest panic, kept by the hook of [`quiet_panics`].
static LAST_PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Panics (in ordo, or inside a crate such as the store on a damaged file) are caught at the
/// command's boundary (and at every owner thread's join) and reported as one error line; the
/// hook only records them instead of printing a backtrace at the user.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let text = format!("{message}{place}");
        // The main thread's panic is the command's one error line; another thread's (a
        // partition owner's) is logged here, and its owner's error names it.
        if std::thread::current().name() != Some("main") {
            tracing::error!(panic = %text, "internal error");
        }
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
    }));
}

/// The latest panic's message and place.
pub fn last_panic() -> Option<String> {
    LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Runs one command.
pub fn execute(command: Command) -> Result<(), Error> {
    match command {
        Command::Demo(a) => commands::demo(a),
        Command::Run(a) => commands::run(a),
        Command::Produce(a) => commands::produce(a),
        Command::State(a) => commands::state(a),
        Command::Partition(a) => commands::partition(a),
        Command::Plan(a) => commands::plan(a),
        Command::Topics(a) => commands::topics(a),
        Command::Export(a) => replay::export(a),
        Command::Replay(a) => replay::replay(a),
        Command::Repartition(a) => replay::repartition(a),
        Command::Bench(a) => commands::bench(a),
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn a_clap_error_is_one_line_naming_the_commands_help() {
        let rendered = "error: the following required arguments were not provided:\n  \
                        --to <TO>\n\nUsage: ordo repartition --to <TO> [OPTIONS]\n\nFor more \
                        information, try '--help'.\n";
        assert_eq!(
            one_line(rendered, None),
            "ordo: error: the following required arguments were not provided: --to <TO>; see \
             `ordo repartition --help`"
        );
        let rendered = "error: unexpected argument '--bogus' found\n\n  tip: to pass '--bogus' \
                        as a value, use '-- --bogus'\n\nUsage: ordo run [OPTIONS]\n\nFor more \
                        information, try '--help'.\n";
        assert_eq!(
            one_line(rendered, Some("ordo run")),
            "ordo: error: unexpected argument '--bogus' found; see `ordo run --help`"
        );
        // A value error has no usage block: the command typed names the help.
        let rendered = "error: invalid value '0' for '--to-partitions <N>': 0 is not in 1..=9\n\n\
                        For more information, try '--help'.\n";
        assert_eq!(
            one_line(rendered, Some("ordo repartition")),
            "ordo: error: invalid value '0' for '--to-partitions <N>': 0 is not in 1..=9; see \
             `ordo repartition --help`"
        );
    }
}
