//! The command line (SPEC §5): parse, set up logging, run one command, and map its outcome to
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

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

pub use args::{Cli, Command};
pub use error::Error;

/// Parses the command line, runs the command, and returns the exit status.
pub fn main() -> ExitCode {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
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
    let typed = Typed::of(&matches);
    match execute(cli.command, &typed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is_quiet() {
                eprintln!("ordo: error: {e}");
            }
            e.exit()
        }
    }
}

/// Which of the subcommand's values were typed on the command line (rather than taken from an
/// `ORDO_*` variable or a default): a typed value wins over a variable for the same setting.
#[derive(Debug, Default)]
pub struct Typed(std::collections::BTreeSet<String>);

impl Typed {
    /// The values typed for the subcommand of `matches`.
    pub fn of(matches: &clap::ArgMatches) -> Typed {
        let Some((_, sub)) = matches.subcommand() else {
            return Typed::default();
        };
        Typed(
            sub.ids()
                .filter(|id| {
                    sub.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine)
                })
                .map(|id| id.to_string())
                .collect(),
        )
    }

    /// Whether the value of argument `id` was typed.
    pub fn contains(&self, id: &str) -> bool {
        self.0.contains(id)
    }
}

/// Runs one command.
pub fn execute(command: Command, typed: &Typed) -> Result<(), Error> {
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
        Command::Repartition(a) => replay::repartition(a, typed),
        Command::Bench(a) => commands::bench(a),
    }
}
