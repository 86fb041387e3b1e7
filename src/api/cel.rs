//! CEL rules of the CRD schema (`x-kubernetes-validations`). The state lists come from the plans, so
//! the apiserver and [`super::validate`] agree with `plan/` by construction.

use kube::core::{Message, Reason, Rule};

use strum::IntoEnumIterator;

use super::SectorSize;
use crate::plan::Plan;

pub(super) fn immutable(field: &str) -> Rule {
    Rule::new("self == oldSelf").message(Message::Message(format!("{field} is immutable")))
}

pub(super) fn sector_immutable_once_set() -> Rule {
    Rule::new("!has(oldSelf.sector) || (has(self.sector) && self.sector == oldSelf.sector)")
        .message("sector cannot be changed or removed once set")
        .field_path(".sector")
}

pub(super) fn unseal_iff_unseal_plan() -> Rule {
    Rule::new("has(self.unseal) == (self.plan == 'unseal')")
        .message("unseal is required when plan is unseal and not allowed for other plans")
        .field_path(".unseal")
        .reason(Reason::FieldValueRequired)
}

pub(super) fn pieces_only_for_sealer_and_snapup() -> Rule {
    Rule::new("!has(self.pieces) || self.plan in ['sealer', 'snapup']")
        .message("pieces are only allowed for the sealer and snapup plans")
        .field_path(".pieces")
        .reason(Reason::FieldValueForbidden)
}

pub(super) fn pieces_or_deals() -> Rule {
    Rule::new("!has(self.pieces) || !has(self.deals) || !has(self.deals.enabled) || !self.deals.enabled")
        .message("give either pieces or deals.enabled, not both: pieces are the sector's data, deals ask the manager for it")
        .field_path(".pieces")
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

pub(super) fn piece_sizes_are_padded() -> Rule {
    let sizes: Vec<String> = (7..=36).map(|shift| (1u64 << shift).to_string()).collect();
    Rule::new(format!(
        "!has(self.pieces) || self.pieces.all(p, p.size in [{}])",
        sizes.join(", ")
    ))
    .message(
        "every piece size must be a padded piece size: a power of two from 128 bytes to 64 GiB",
    )
    .field_path(".pieces")
}

pub(super) fn pieces_fit_the_sector() -> Rule {
    let sizes: Vec<String> = SectorSize::iter()
        .map(|size| format!("'{size}': {}", size.bytes()))
        .collect();
    let sizes = format!("{{{}}}", sizes.join(", "));
    let capacity = choose(
        "self.sectorSize",
        SectorSize::iter().map(|size| (size.to_string(), size.bytes().to_string())),
    );
    Rule::new(format!(
        "!has(self.pieces) || self.pieces.map(p, p.size).sum() <= {sizes}[self.sectorSize]"
    ))
    .message(Message::Expression(format!(
        "'the padded piece sizes add up to more than a ' + self.sectorSize + ' sector holds (' + ({capacity}) + ' bytes)'"
    )))
    .field_path(".pieces")
}

pub(super) fn synthetic_only_for_porep_plans() -> Rule {
    Rule::new(
        "!has(self.syntheticPoRep) || !self.syntheticPoRep || self.plan in ['sealer', 'rebuild']",
    )
    .message("syntheticPoRep is only for the sealer and rebuild plans, which run PoRep")
    .field_path(".syntheticPoRep")
    .reason(Reason::FieldValueForbidden)
}
