//! The one place that maps a failed command to its exit status and its line on stderr:
//! 0 success, 1 runtime failure, 2 bad usage or configuration, 3 a replay that differs.

use std::io;
use std::process::ExitCode;

use crate::app::RunError;
use crate::log::{KafkaLogError, LogError, LogsError};
use crate::owner::embedded::OwnersError;
use crate::owner::group::GroupError;
use crate::tools::bench::BenchError;
use crate::tools::demo::DemoError;
use crate::tools::deployment::KafkaToolError;
use crate::tools::produce::ProduceError;
use crate::tools::repartition::data_dir::RepartitionError;
use crate::tools::replay::export::ExportError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line or its values: the message names the flag and the fix.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Kafka(#[from] KafkaLogError),
    #[error(transparent)]
    Logs(#[from] LogsError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Repartition(#[from] RepartitionError),
    #[error(transparent)]
    KafkaTool(#[from] KafkaToolError),
    #[error(transparent)]
    Bench(#[from] BenchError),
    #[error(transparent)]
    Demo(#[from] DemoError),
    #[error("replay differs from the live changelog in {0} reservations")]
    Differs(usize),
    #[error("cannot write output: {0}")]
    Output(#[from] io::Error),
}

impl Error {
    /// A usage error with `message`.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::Usage(message.into())
    }

    /// The exit status.
    pub fn exit_code(&self) -> u8 {
        const RUNTIME: u8 = 1;
        const USAGE: u8 = 2;
        const DIFFERS: u8 = 3;
        let usage = |yes: bool| if yes { USAGE } else { RUNTIME };
        match self {
            Self::Usage(_) => USAGE,
            Self::Differs(_) => DIFFERS,
            // A reader that went away (`ordo state | head`) is not a failure.
            Self::Output(e) if e.kind() == io::ErrorKind::BrokenPipe => 0,
            Self::Output(_) => RUNTIME,
            Self::Log(e) => usage(log_is_usage(e)),
            Self::Kafka(e) => usage(kafka_is_usage(e)),
            Self::Logs(e) => usage(logs_is_usage(e)),
            Self::Produce(e) => usage(match e {
                ProduceError::BadLine { .. }
                | ProduceError::TooLarge { .. }
                | ProduceError::Read { .. } => true,
                ProduceError::Log(e) => logs_is_usage(e),
            }),
            Self::Run(e) => usage(match e {
                RunError::Owners(OwnersError::Log { source, .. }) => log_is_usage(source),
                RunError::Owners(OwnersError::Panicked { .. } | OwnersError::Spawn { .. }) => false,
                RunError::Group(GroupError::Kafka(e)) | RunError::Kafka(e) => kafka_is_usage(e),
                RunError::Group(GroupError::Owner { .. } | GroupError::Spawn { .. }) => false,
                RunError::Listen { .. }
                | RunError::TooManyPartitions { .. }
                | RunError::Unadvertised { .. } => true,
                RunError::Runtime(_) => false,
            }),
            Self::Export(e) => usage(match e {
                ExportError::NoPartition { .. } => true,
                ExportError::Log(e) => logs_is_usage(e),
                ExportError::Write(_) => false,
            }),
            Self::Repartition(e) => usage(match e {
                RepartitionError::Log(e) => logs_is_usage(e),
                RepartitionError::Io { .. } | RepartitionError::Check(_) => false,
            }),
            Self::KafkaTool(e) => usage(match e {
                KafkaToolError::Refused(_) => true,
                KafkaToolError::Log(e) => logs_is_usage(e),
                KafkaToolError::Check(_) => false,
            }),
            Self::Bench(_) => RUNTIME,
            Self::Demo(e) => usage(match e {
                DemoError::NotEmpty { .. } | DemoError::BadCount => true,
                DemoError::Log(e) => log_is_usage(e),
                DemoError::Produce(_)
                | DemoError::Run(_)
                | DemoError::TempDir(_)
                | DemoError::Output(_)
                | DemoError::Mismatch(_) => false,
            }),
        }
    }

    /// Whether the command ends quietly (no error line), as after a closed stdout pipe.
    pub fn is_quiet(&self) -> bool {
        let broken_pipe = |e: &io::Error| e.kind() == io::ErrorKind::BrokenPipe;
        match self {
            Self::Output(e) => broken_pipe(e),
            Self::Demo(DemoError::Output(e)) | Self::Export(ExportError::Write(e)) => {
                broken_pipe(e)
            }
            _ => false,
        }
    }

    /// The exit status as the process's.
    pub fn exit(&self) -> ExitCode {
        if self.is_quiet() {
            return ExitCode::SUCCESS;
        }
        ExitCode::from(self.exit_code())
    }
}

/// Either backend's errors that are the user's doing.
fn logs_is_usage(e: &LogsError) -> bool {
    match e {
        LogsError::Embedded(e) => log_is_usage(e),
        LogsError::Kafka(e) => kafka_is_usage(e),
        LogsError::NoStaging => true,
        LogsError::Task(_) => false,
        LogsError::Shared(e) => logs_is_usage(e),
    }
}

/// The data dir's errors that are the user's doing: a missing or foreign dir, or another N.
fn log_is_usage(e: &LogError) -> bool {
    match e {
        LogError::NotFound { .. }
        | LogError::PartitionMismatch { .. }
        | LogError::PartitionerMismatch { .. }
        | LogError::Foreign { .. } => true,
        LogError::InUse { .. }
        | LogError::CreateDir { .. }
        | LogError::GroupCommit { .. }
        | LogError::BeyondEnd { .. }
        | LogError::ReadOnly
        | LogError::Empty { .. }
        | LogError::Store { .. } => false,
    }
}

/// The cluster's errors that are the user's doing: topics missing or not as `topics/` says.
fn kafka_is_usage(e: &KafkaLogError) -> bool {
    match e {
        KafkaLogError::MissingTopic { .. }
        | KafkaLogError::PartitionMismatch { .. }
        | KafkaLogError::FixedPartitions { .. }
        | KafkaLogError::ConfigMismatch { .. }
        | KafkaLogError::RepartitionInProgress { .. }
        | KafkaLogError::PartitionerMismatch { .. }
        | KafkaLogError::NoTransactions { .. }
        | KafkaLogError::Refused { .. } => true,
        KafkaLogError::Unreachable { .. }
        | KafkaLogError::Kafka { .. }
        | KafkaLogError::CreateTopic { .. }
        | KafkaLogError::DeleteTopic { .. }
        | KafkaLogError::AddPartitions { .. }
        | KafkaLogError::Delivery { .. }
        | KafkaLogError::NoEnd { .. }
        | KafkaLogError::Stalled { .. }
        | KafkaLogError::Misplaced { .. }
        | KafkaLogError::BeyondEnd { .. }
        | KafkaLogError::Fenced { .. }
        | KafkaLogError::Aborted { .. }
        | KafkaLogError::Transaction { .. }
        | KafkaLogError::Restore(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(Error::usage("x").exit_code(), 2);
        assert_eq!(Error::Differs(3).exit_code(), 3);
        let missing = Error::Log(LogError::NotFound { path: "d".into() });
        assert_eq!(missing.exit_code(), 2);
        let pipe = Error::Output(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(pipe.is_quiet());
        let full = Error::Output(io::Error::other("no space"));
        assert_eq!((full.exit_code(), full.is_quiet()), (1, false));
    }
}
