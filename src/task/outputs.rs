//! What a finished step adds to the task's status, built on [`StepInputs::absorb`]: the one
//! mapping from step results to what later steps and manager calls read.

use super::{Effect, Turn};
use crate::api::{Artifact, Outputs};
use crate::plan::StepKind;
use crate::step::{FileDigest, StepInputs, StepResult};

/// Takes what a step produced into `outputs`.
pub fn absorb(outputs: &mut Outputs, result: &StepResult) {
    let mut gained = StepInputs::default();
    gained.absorb(&result.outputs);
    let artifact = |file: FileDigest, data: Option<String>| Artifact {
        location: file.path.display().to_string(),
        sha256: file.sha256,
        size: file.size,
        data,
    };
    if let Some(comm_d) = gained.comm_d {
        outputs.comm_d = Some(comm_d);
    }
    if let Some(comm_r) = gained.comm_r {
        outputs.comm_r = Some(comm_r);
    }
    if let Some(file) = gained.c1_output {
        outputs.c1_output = Some(artifact(file, None));
    }
    if let Some(file) = gained.proof {
        outputs.proof = Some(artifact(file, result.outputs.proof.clone()));
    }
}

impl Turn<'_> {
    pub(super) fn absorb(&mut self, step: StepKind, result: &StepResult) {
        absorb(
            self.status.outputs.get_or_insert_with(Default::default),
            result,
        );
        self.effects.push(Effect::StepFinished {
            step,
            seconds: result.duration_ms as f64 / 1000.0,
            reused: result.reused,
        });
    }
}
