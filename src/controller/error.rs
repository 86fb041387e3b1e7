//! Why a reconcile ended early, named after the step of the pipeline that failed: reading the
//! task, finding out what the task core asked, carrying out an effect, writing the status, the
//! finalizer. A wait (a cleanup still running, a back-off) is not an error.

/// A reconcile that could not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SealingTask cannot be read into the CRD types (a field out of range, a wrong type):
    /// it is reported with a Warning Event and left alone until it changes.
    #[error("SealingTask {task} cannot be read: {message}")]
    InvalidObject { task: String, message: String },
    #[error("observing {task}: {source}")]
    Observe {
        task: String,
        #[source]
        source: kube::Error,
    },
    #[error("{task}: {action}: {source}")]
    Apply {
        task: String,
        action: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status of {task}: {source}")]
    WriteStatus {
        task: String,
        #[source]
        source: kube::Error,
    },
    /// A SealingPool's reconcile: listing, creating or deleting its tasks, writing its status.
    #[error("SealingPool {pool}: {action}: {source}")]
    Pool {
        pool: String,
        action: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("the finalizer of {task}: {source}")]
    Finalizer {
        task: String,
        #[source]
        source: Box<kube::runtime::finalizer::Error<Error>>,
    },
}

impl Error {
    pub fn observe(namespace: &str, name: &str, source: kube::Error) -> Self {
        Error::Observe {
            task: format!("{namespace}/{name}"),
            source,
        }
    }

    /// Someone else changed the task since it was read (a user's edit, a second writer): the
    /// reconcile starts over from the current object.
    pub fn is_conflict(&self) -> bool {
        let source = match self {
            Error::Observe { source, .. }
            | Error::Apply { source, .. }
            | Error::WriteStatus { source, .. }
            | Error::Pool { source, .. } => source,
            Error::Finalizer { source, .. } => match source.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => {
                    return inner.is_conflict();
                }
                kube::runtime::finalizer::Error::AddFinalizer(source)
                | kube::runtime::finalizer::Error::RemoveFinalizer(source) => source,
                _ => return false,
            },
            Error::InvalidObject { .. } => return false,
        };
        matches!(source, kube::Error::Api(status) if status.code == 409)
    }
}
