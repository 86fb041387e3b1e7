//! Why a reconcile ended early, named after the step of the pipeline that failed: reading the
//! task, finding out what the task core asked, carrying out an effect, writing the status, the
//! finalizer. A wait (a cleanup still running, a back-off) is not an error.

/// A task's reconcile that could not finish. Its category ([`Error::category`], the variant's
/// name) labels `damocles_reconcile_errors_total` and is the reason of the Warning Event.
#[derive(Debug, thiserror::Error, strum::EnumDiscriminants)]
#[strum_discriminants(name(ErrorCategory), derive(strum::IntoStaticStr, strum::EnumIter))]
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
    #[error("the finalizer of {task}: {source}")]
    Finalizer {
        task: String,
        #[source]
        source: Box<kube::runtime::finalizer::Error<Error>>,
    },
}

impl Error {
    /// The pipeline step that failed, as a metric label and Event reason.
    pub fn category(&self) -> &'static str {
        ErrorCategory::from(self).into()
    }

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
            | Error::WriteStatus { source, .. } => source,
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

/// A SealingPool's reconcile that could not finish, by the step that failed.
#[derive(Debug, thiserror::Error, strum::EnumDiscriminants)]
#[strum_discriminants(name(PoolErrorCategory), derive(strum::IntoStaticStr, strum::EnumIter))]
pub enum PoolError {
    /// The SealingPool cannot be read into the CRD types: reported with a Warning Event and
    /// left alone until it changes.
    #[error("SealingPool {pool} cannot be read: {message}")]
    InvalidObject { pool: String, message: String },
    #[error("SealingPool {pool}: {action}: {source}")]
    Observe {
        pool: String,
        action: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("SealingPool {pool}: {action}: {source}")]
    Apply {
        pool: String,
        action: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status of SealingPool {pool}: {source}")]
    WriteStatus {
        pool: String,
        #[source]
        source: kube::Error,
    },
}

impl PoolError {
    pub fn category(&self) -> &'static str {
        PoolErrorCategory::from(self).into()
    }

    /// Someone else changed the pool since it was read: the reconcile starts over.
    pub fn is_conflict(&self) -> bool {
        match self {
            PoolError::Observe { source, .. }
            | PoolError::Apply { source, .. }
            | PoolError::WriteStatus { source, .. } => {
                matches!(source, kube::Error::Api(status) if status.code == 409)
            }
            PoolError::InvalidObject { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_names_the_step_that_failed() {
        let gone = || {
            kube::Error::Api(
                kube::core::Status::failure("gone", "NotFound")
                    .with_code(404)
                    .boxed(),
            )
        };
        let write = Error::WriteStatus {
            task: "farm/t".into(),
            source: gone(),
        };
        assert_eq!(write.category(), "WriteStatus");
        assert_eq!(Error::observe("farm", "t", gone()).category(), "Observe");
        let invalid = Error::InvalidObject {
            task: "farm/t".into(),
            message: "spec.sectorSize".into(),
        };
        assert_eq!(invalid.category(), "InvalidObject");
        let pool = PoolError::Apply {
            pool: "farm/p".into(),
            action: "creating a task",
            source: gone(),
        };
        assert_eq!(pool.category(), "Apply");
        assert!(!pool.is_conflict());
    }
}
