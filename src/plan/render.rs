//! Renders the plans as JSON, Markdown (the generated `docs/state-machines.md`) and Graphviz dot.

use std::fmt::Write;

use serde::Serialize;

use super::{INITIAL, Plan, PlanKind, State, TERMINAL, Transition};

#[derive(Serialize)]
struct PlansDocument {
    plans: Vec<PlanDocument>,
}

#[derive(Serialize)]
struct PlanDocument {
    name: PlanKind,
    initial: State,
    terminal: [State; 2],
    states: Vec<State>,
    transitions: &'static [Transition],
}

/// `{"plans":[{"name","initial","terminal","states","transitions":[{"from","event","to"}]}]}`.
pub fn json<'a>(plans: impl IntoIterator<Item = &'a Plan>) -> String {
    let document = PlansDocument {
        plans: plans
            .into_iter()
            .map(|plan| PlanDocument {
                name: plan.kind,
                initial: INITIAL,
                terminal: TERMINAL,
                states: plan.states.iter().map(|s| s.state).collect(),
                transitions: plan.transitions,
            })
            .collect(),
    };
    serde_json::to_string_pretty(&document).expect("plain data serializes") + "\n"
}

pub fn dot<'a>(plans: impl IntoIterator<Item = &'a Plan>) -> String {
    let mut out =
        String::from("digraph plans {\n  rankdir=TB;\n  node [shape=box, style=rounded];\n");
    for plan in plans {
        let kind = plan.kind;
        writeln!(out, "  subgraph cluster_{kind} {{\n    label=\"{kind}\";").unwrap();
        for spec in plan.states {
            let shape = if spec.state.is_terminal() {
                ", shape=doublecircle"
            } else {
                ""
            };
            writeln!(out, "    {kind}_{0} [label=\"{0}\"{shape}];", spec.state).unwrap();
        }
        for t in plan.transitions {
            writeln!(
                out,
                "    {kind}_{} -> {kind}_{} [label=\"{}\"];",
                t.from, t.to, t.event
            )
            .unwrap();
        }
        out.push_str("  }\n");
    }
    out.push_str("}\n");
    out
}

fn list<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    if items.is_empty() {
        "—".to_string()
    } else {
        items.join(", ")
    }
}

fn markdown_plan(out: &mut String, plan: &Plan) {
    let kind = plan.kind;
    writeln!(out, "## {kind}\n").unwrap();
    out.push_str("```mermaid\nstateDiagram-v2\n");
    writeln!(out, "    [*] --> {INITIAL}").unwrap();
    for t in plan.transitions {
        writeln!(out, "    {} --> {}: {}", t.from, t.to, t.event).unwrap();
    }
    out.push_str("    Finished --> [*]\n    Aborted --> [*]\n```\n\n");
    writeln!(
        out,
        "Every state can also go to `Aborted`; those edges are not drawn.\n\n\
         | State | Work done in this state | Needs | Produces | Next |\n\
         |---|---|---|---|---|"
    )
    .unwrap();
    for spec in plan.states {
        let work = if spec.actions.is_empty() {
            spec.summary.to_string()
        } else {
            format!("{} ({})", spec.summary, list(spec.actions))
        };
        let next = list(
            plan.transitions_from(spec.state)
                .map(|t| format!("{} → {}", t.event, t.to)),
        );
        writeln!(
            out,
            "| `{}` | {work} | {} | {} | {next} |",
            spec.state,
            list(spec.needs),
            list(spec.produces)
        )
        .unwrap();
    }
    out.push('\n');
}

const RESUME_GUIDE: &str = r#"## Resuming a paused task

A task pauses (phase `Paused`) on a permanent or critical failure and keeps every file. To go on, set
`spec.resumeState` once; the operator validates it, applies it, records it in `status.lastResume` and an
Event, and clears the field. The rules are damocles-worker's:

- the value must be the exact name of a state of the task's plan (the tables above), or `Aborted`;
- an empty value (`resumeState: ""`) is a resume without a state: it retries the current state's work;
- resuming into the state the task is already in is refused (use the empty value to retry it);
- `Aborted` is always allowed on a live task: the running step is stopped, the manager is told
  (ReportAborted; ReportFinalized for an unseal or rebuild, whose sector is proven) and the
  workspace is wiped;
- a rewind target whose inputs the task no longer has is refused, with a message that names the missing
  output and the state that produces it, and nothing else changes;
- a finished or aborted task cannot be resumed.

A refused value leaves a Warning Event and a `ResumeRejected` condition (its message says why) and is
cleared like an applied one, so the same value can be asked for again later; a task that was running
keeps running, a paused one stays paused. A paused task's message lists the resume targets valid at
that moment.

### Abort a task whose ticket expired

A PreCommit must land before the ticket epoch + 2880 + 900 epochs. A sector whose ticket expired while it
waited is best ended (damocles: `damocles-worker worker resume --state Aborted --index <index>`):

```sh
kubectl patch st sealer-2kib --type merge -p '{"spec":{"resumeState":"Aborted"}}'
kubectl get st sealer-2kib          # PHASE Aborted
kubectl describe st sealer-2kib     # Events: Resumed ... -> Aborted
```

### Rewind a task to TreeDBuilt

If the pieces and tree-d are fine but a later step cannot recover (again, an expired ticket is the usual
reason), rewind to `TreeDBuilt`: the task asks for a new ticket and redoes PC1 and PC2 (damocles:
`damocles-worker worker resume --state TreeDBuilt --index <index>`):

```sh
kubectl patch st sealer-2kib --type merge -p '{"spec":{"resumeState":"TreeDBuilt"}}'
kubectl get st sealer-2kib -w       # STATE TreeDBuilt, then TicketAssigned, PC1Done, ...
```

The same checks run offline: `damocles-operator plans --output markdown` prints this document, and
`damocles-operator validate -f task.yaml` checks a manifest (including `resumeState`) before you apply it.
"#;

/// The whole of `docs/state-machines.md`.
pub fn markdown<'a>(plans: impl IntoIterator<Item = &'a Plan>) -> String {
    let mut out = String::from(
        "<!-- Generated by `damocles-operator plans --output markdown`; do not edit by hand. -->\n\
         # Task state machines\n\n\
         Each SealingTask follows one plan, taken from damocles-worker (`docs/zh/09.任务状态流转.md`, \
         corrected from its source). A state's work ends in an event that moves the task on. \
         *Needs* are the outputs the work reads (a resume into that state requires them); *Produces* \
         are the outputs it establishes.\n\n",
    );
    for plan in plans {
        markdown_plan(&mut out, plan);
    }
    out.push_str(RESUME_GUIDE);
    out
}
