//! Where each value of the command line came from: typed, an `ORDO_*` variable, or a default.
//!
//! Every flag also reads an `ORDO_*` variable. A typed flag wins over a variable for the same
//! setting; an empty variable counts as unset; a boolean variable takes `1/0/true/false/yes/no`
//! (and `on/off`); and an error names the flag or the variable the value actually came from.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::OnceLock;

use clap::builder::BoolishValueParser;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

/// The command line's definition with the environment rules applied: empty `ORDO_*` variables
/// are dropped (unset), boolean flags read their variable leniently.
pub fn command(base: Command) -> Command {
    fn adjust(arg: Arg) -> Arg {
        let empty = arg
            .get_env()
            .and_then(std::env::var_os)
            .is_some_and(|v| v.is_empty());
        let arg = if empty { arg.env(None) } else { arg };
        match arg.get_action() {
            ArgAction::SetTrue => arg.value_parser(BoolishValueParser::new()),
            _ => arg,
        }
    }
    fn walk(cmd: Command) -> Command {
        cmd.mut_args(adjust).mut_subcommands(walk)
    }
    walk(base)
}

/// Where one value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Typed,
    Variable(String),
    Default,
}

/// Where each value of the chosen subcommand came from.
#[derive(Debug, Default)]
pub struct Sources {
    origins: BTreeMap<String, (Origin, String)>,
}

impl Sources {
    /// The origins of the values of `matches`' subcommand, defined by `cmd`.
    pub fn of(cmd: &Command, matches: &ArgMatches) -> Sources {
        let Some((name, sub)) = matches.subcommand() else {
            return Sources::default();
        };
        let Some(def) = cmd.find_subcommand(name) else {
            return Sources::default();
        };
        let origins = def
            .get_arguments()
            .map(|arg| {
                let id = arg.get_id().to_string();
                let flag = arg
                    .get_long()
                    .map_or_else(|| id.replace('_', "-"), str::to_owned);
                let origin = match sub.value_source(&id) {
                    Some(ValueSource::CommandLine) => Origin::Typed,
                    Some(ValueSource::EnvVariable) => Origin::Variable(
                        arg.get_env()
                            .map(|e| e.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                    ),
                    _ => Origin::Default,
                };
                (id, (origin, format!("--{flag}")))
            })
            .collect();
        Sources { origins }
    }

    /// Whether the value of argument `id` was typed on the command line.
    pub fn typed(&self, id: &str) -> bool {
        matches!(self.origins.get(id), Some((Origin::Typed, _)))
    }

    /// How to name argument `id` to the user: `ORDO_X` when the value came from that variable,
    /// else its flag, `--x`.
    pub fn label(&self, id: &str) -> String {
        match self.origins.get(id) {
            Some((Origin::Variable(var), _)) => var.clone(),
            Some((_, flag)) => flag.clone(),
            None => format!("--{}", id.replace('_', "-")),
        }
    }

    /// Argument `id` with its value, as the user gave it: `ORDO_X=v` or `--x v`.
    pub fn show(&self, id: &str, value: impl std::fmt::Display) -> String {
        match self.origins.get(id) {
            Some((Origin::Variable(var), _)) => format!("{var}={value}"),
            _ => format!("{} {value}", self.label(id)),
        }
    }
}

static SOURCES: OnceLock<Sources> = OnceLock::new();

/// Records the origins of this process's command line (once, at start).
pub fn install(sources: Sources) {
    let _ = SOURCES.set(sources);
}

/// The origins of this process's command line (every value a typed flag when none were
/// recorded, as in tests).
pub fn sources() -> &'static Sources {
    SOURCES.get_or_init(Sources::default)
}

/// A clap error about a value that came from an `ORDO_*` variable names the variable rather
/// than the flag the user did not type.
pub fn name_variable(mut err: clap::Error, cmd: &Command, argv: &[OsString]) -> clap::Error {
    if !matches!(
        err.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation | ErrorKind::InvalidUtf8
    ) {
        return err;
    }
    let Some(ContextValue::String(shown)) = err.get(ContextKind::InvalidArg) else {
        return err;
    };
    let long = shown
        .trim_start_matches("--")
        .split([' ', '='])
        .next()
        .unwrap_or_default()
        .to_owned();
    let typed = argv.iter().skip(1).any(|a| {
        let a = a.to_string_lossy();
        a == format!("--{long}") || a.starts_with(&format!("--{long}="))
    });
    if typed {
        return err;
    }
    let mut defs = vec![cmd];
    let mut var = None;
    while let Some(def) = defs.pop() {
        if let Some(arg) = def.get_arguments().find(|a| a.get_long() == Some(&long)) {
            var = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            if var.is_some() {
                break;
            }
        }
        defs.extend(def.get_subcommands());
    }
    if let Some(var) = var {
        err.insert(ContextKind::InvalidArg, ContextValue::String(var));
    }
    err
}
