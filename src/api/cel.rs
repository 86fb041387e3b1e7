//! CEL rules of the CRD schema (`x-kubernetes-validations`). The state lists come from the plans, so
//! the apiserver and [`super::validate`] agree with `plan/` by construction.

use kube::core::{Message, Reason, Rule};

use crate::plan::Plan;

pub(super) fn immutable(field: &str) -> Rule {
    Rule::new("self == oldSelf").message(Message::Message(format!("{field} is immutable")))
}

pub(super) fn sector_immutable_once_set() -> Rule {
    Rule::new("!has(oldSelf.sector) || (has(self.sector) && self.sector == oldSelf.sector)")
        .message("sector cannot be changed or removed once set")
        .field_path(".sector")
}

/// syntheticPoRep and deals.enabled decide the proof type and the sector's data: fixed once the
/// task exists (as plan and sectorSize).
pub(super) fn seal_choices_immutable() -> Rule {
    Rule::new(
        "has(self.syntheticPoRep) == has(oldSelf.syntheticPoRep) && \
         (!has(self.syntheticPoRep) || self.syntheticPoRep == oldSelf.syntheticPoRep) && \
         (has(self.deals) && has(self.deals.enabled) && self.deals.enabled) == \
         (has(oldSelf.deals) && has(oldSelf.deals.enabled) && oldSelf.deals.enabled)",
    )
    .message("syntheticPoRep and deals.enabled are immutable")
}

pub(super) fn unseal_only_for_unseal_plan() -> Rule {
    Rule::new("!has(self.unseal) || self.plan == 'unseal'")
        .message("unseal names the unseal request a task expects and is only allowed when plan is unseal")
        .field_path(".unseal")
        .reason(Reason::FieldValueForbidden)
}

/// `key == 'a' ? 'A' : key == 'b' ? 'B' : ''`: a constant string chosen by a field. Messages are built
/// this way because the real apiserver's cost estimator refuses messageExpressions that join lists or
/// format numbers (estimated over 100x its budget), though kube-cel evaluates them fine.
fn choose(key: &str, choices: impl Iterator<Item = (String, String)>) -> String {
    let mut expression = String::new();
    for (value, text) in choices {
        expression.push_str(&format!("{key} == '{value}' ? '{text}' : "));
    }
    expression.push_str("''");
    expression
}

/// `{'sealer': ['Empty', ...], ...}`: each plan's resumable states (Aborted is accepted separately).
fn states_by_plan() -> String {
    let entries: Vec<String> = Plan::all()
        .map(|plan| {
            let states: Vec<String> = plan
                .resumable_state_names()
                .map(|s| format!("'{s}'"))
                .collect();
            format!("'{}': [{}]", plan.kind, states.join(", "))
        })
        .collect();
    format!("{{{}}}", entries.join(", "))
}

pub(super) fn resume_state_in_plan() -> Rule {
    let states = states_by_plan();
    let valid_values = choose(
        "self.plan",
        Plan::all().map(|plan| {
            let names: Vec<&str> = plan.resumable_state_names().collect();
            (plan.kind.to_string(), names.join(", "))
        }),
    );
    Rule::new(format!(
        "!has(self.resumeState) || self.resumeState in ['', 'Aborted'] || self.resumeState in {states}[self.plan]"
    ))
    .message(Message::Expression(format!(
        "'resumeState ' + self.resumeState + ' is not a state of plan ' + self.plan + '; valid values: ' + \
         ({valid_values}) + ', Aborted, or \"\" to retry the current step'"
    )))
    .field_path(".resumeState")
}

pub(super) fn synthetic_only_for_porep_plans() -> Rule {
    Rule::new(
        "!has(self.syntheticPoRep) || !self.syntheticPoRep || self.plan in ['sealer', 'rebuild']",
    )
    .message("syntheticPoRep is only for the sealer and rebuild plans, which run PoRep")
    .field_path(".syntheticPoRep")
    .reason(Reason::FieldValueForbidden)
}
