//! The farm file `damocles-operator simulate` reads: the nodes, the step profiles the operator
//! runs with, the SealingPools, how long each step takes and how the chain and the kubelet behave.
//! Every field but `nodes` and `pools` has a default taken from public 32GiB figures.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::api::SealingPoolSpec;
use crate::dev::manager::chain::ChainRules;
use crate::plan::StepKind;
use crate::task::Profiles;

/// The chart's values file: its `profiles` are what a farm runs with unless it says otherwise.
const CHART_VALUES: &str = include_str!("../../charts/damocles-operator/values.yaml");

/// The presets in the repository (`simulate/presets/`), by name.
pub const PRESETS: &[(&str, &str)] = &[
    ("a", include_str!("../../simulate/presets/a.yaml")),
    ("b", include_str!("../../simulate/presets/b.yaml")),
    ("c", include_str!("../../simulate/presets/c.yaml")),
];

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Farm {
    /// A line saying what this farm is, printed with the results.
    #[serde(default)]
    pub description: String,
    pub nodes: Vec<NodeClass>,
    /// The operator's step profiles (the chart's `profiles` value); the chart's defaults when
    /// left out.
    #[serde(default)]
    pub profiles: Option<serde_json::Value>,
    pub pools: Vec<Pool>,
    #[serde(default)]
    pub steps: Steps,
    #[serde(default)]
    pub kubelet: Kubelet,
    #[serde(default)]
    pub chain: Chain,
    /// Workspace disk a 32GiB sector holds on its node from its first step to its cleanup
    /// (sealed file, the 11 layers, trees, cache).
    #[serde(default = "default_workspace_gib")]
    pub workspace_gib: f64,
}

fn default_workspace_gib() -> f64 {
    // 32 GiB sealed + 32 GiB staged + 11 layers of 32 GiB + tree-c (~73 GiB) + tree-r-last.
    500.0
}

/// `count` identical nodes.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeClass {
    pub name: String,
    pub count: u32,
    pub cores: u32,
    /// Core complexes (CCX: cores sharing one L3 cache). One PC1 runs at full speed per CCX;
    /// more PC1s on a node share its CCXs and each runs slower.
    pub ccx: u32,
    pub memory_gib: f64,
    #[serde(default)]
    pub gpus: u32,
    /// Workspace disk (NVMe) in GiB; 0: none (a GPU-only node).
    #[serde(default)]
    pub nvme_gib: f64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Taints, as `key` or `key=value`, all NoSchedule.
    #[serde(default)]
    pub taints: Vec<String>,
}

/// A SealingPool: its name and spec, as `kubectl apply` would create it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pool {
    pub name: String,
    pub spec: SealingPoolSpec,
}

/// How long the steps take, at full speed, in seconds; each run draws uniformly within
/// `spread` (a fraction) of its figure.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Steps {
    #[serde(default = "default_seconds")]
    pub seconds: BTreeMap<StepKind, f64>,
    #[serde(default = "default_spread")]
    pub spread: f64,
    /// The chance that a step fails with a temporary error halfway through.
    #[serde(default = "default_failure_rate")]
    pub failure_rate: f64,
}

impl Default for Steps {
    fn default() -> Self {
        Self {
            seconds: default_seconds(),
            spread: default_spread(),
            failure_rate: default_failure_rate(),
        }
    }
}

/// Public 32GiB figures: add-piece and tree-d 3 min together, PC1 3 h on one CCX, PC2 15 min on
/// a GPU, C1 1 min, C2 2.5 min on a GPU (supraseal class; bellperson takes about 20 min), persist
/// 3 min.
fn default_seconds() -> BTreeMap<StepKind, f64> {
    BTreeMap::from([
        (StepKind::AddPiece, 120.0),
        (StepKind::TreeD, 60.0),
        (StepKind::Pc1, 3.0 * 3600.0),
        (StepKind::Pc2, 15.0 * 60.0),
        (StepKind::SyntheticProofs, 10.0 * 60.0),
        (StepKind::Persist, 3.0 * 60.0),
        (StepKind::C1, 60.0),
        (StepKind::C2, 150.0),
    ])
}

fn default_spread() -> f64 {
    0.1
}

fn default_failure_rate() -> f64 {
    0.01
}

impl Steps {
    pub fn median(&self, step: StepKind) -> f64 {
        self.seconds.get(&step).copied().unwrap_or(60.0)
    }

    /// Seconds at full speed for one run of `steps` in turn, each drawn within `spread` of its
    /// median.
    pub fn draw(&self, rng: &mut impl rand::Rng, steps: &[StepKind]) -> f64 {
        steps
            .iter()
            .map(|step| self.median(*step) * rng.gen_range(1.0 - self.spread..=1.0 + self.spread))
            .sum()
    }
}

/// What a node's kubelet adds to each pod, in seconds.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Kubelet {
    /// From binding to the container running, drawn uniformly from half to one and a half of it.
    #[serde(default = "default_pod_start")]
    pub pod_start_seconds: f64,
    /// The first pod of the step image on a node pulls it.
    #[serde(default = "default_image_pull")]
    pub image_pull_seconds: f64,
    /// A C2 pod is a fresh process: it reads the Groth parameters (about 100 GiB at 32GiB)
    /// before proving, holding its GPU.
    #[serde(default = "default_c2_params")]
    pub c2_parameter_load_seconds: f64,
}

impl Default for Kubelet {
    fn default() -> Self {
        Self {
            pod_start_seconds: default_pod_start(),
            image_pull_seconds: default_image_pull(),
            c2_parameter_load_seconds: default_c2_params(),
        }
    }
}

fn default_pod_start() -> f64 {
    2.0
}

fn default_image_pull() -> f64 {
    60.0
}

fn default_c2_params() -> f64 {
    // 100 GiB from a page-cached NVMe at ~5 GiB/s.
    20.0
}

/// The chain, as the dev manager simulates it (mainnet values by default).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Chain {
    #[serde(default = "default_block_seconds")]
    pub block_seconds: f64,
    /// Epochs from a PreCommit or proof submission to it landing.
    #[serde(default = "default_landing")]
    pub landing_epochs: i64,
    /// PreCommitChallengeDelay.
    #[serde(default = "default_seed_delay")]
    pub seed_delay_epochs: i64,
}

impl Default for Chain {
    fn default() -> Self {
        Self {
            block_seconds: default_block_seconds(),
            landing_epochs: default_landing(),
            seed_delay_epochs: default_seed_delay(),
        }
    }
}

fn default_block_seconds() -> f64 {
    30.0
}

fn default_landing() -> i64 {
    6
}

fn default_seed_delay() -> i64 {
    150
}

impl Chain {
    pub fn rules(&self) -> ChainRules {
        ChainRules {
            // StackedDrg32GiBV1_1.
            proof_type: 8,
            precommit_landing: self.landing_epochs,
            proof_landing: self.landing_epochs,
            seed_delay: self.seed_delay_epochs,
            block_seconds: self.block_seconds,
            ..ChainRules::default()
        }
    }
}

impl Farm {
    pub fn parse(text: &str) -> Result<Self, String> {
        let farm: Farm = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        if farm.nodes.is_empty() {
            return Err("nodes: a farm needs at least one node class".into());
        }
        if farm.pools.is_empty() {
            return Err("pools: a farm needs at least one SealingPool".into());
        }
        for class in &farm.nodes {
            if class.ccx == 0 && class.nvme_gib > 0.0 {
                return Err(format!(
                    "nodes {}: a node with workspace disk needs ccx (its core complexes) above 0",
                    class.name
                ));
            }
        }
        farm.profiles()?;
        Ok(farm)
    }

    /// The preset named `name`, or the file at that path.
    pub fn load(name_or_path: &str) -> Result<Self, String> {
        let text = match PRESETS.iter().find(|(name, _)| *name == name_or_path) {
            Some((_, text)) => text.to_string(),
            None => std::fs::read_to_string(name_or_path).map_err(|e| {
                format!(
                    "{name_or_path}: {e} (presets: {})",
                    PRESETS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?,
        };
        Self::parse(&text).map_err(|e| format!("{name_or_path}: {e}"))
    }

    /// The step profiles: the farm's own, or the chart's.
    pub fn profiles(&self) -> Result<Profiles, String> {
        let value = match &self.profiles {
            Some(value) => value.clone(),
            None => chart_profiles()?,
        };
        let text = serde_json::to_string(&value).map_err(|e| e.to_string())?;
        Profiles::parse(&text).map_err(|e| format!("profiles: {e}"))
    }
}

/// The `profiles` value of the chart's values.yaml.
pub fn chart_profiles() -> Result<serde_json::Value, String> {
    let values: serde_json::Value =
        serde_saphyr::from_str(CHART_VALUES).map_err(|e| format!("the chart's values: {e}"))?;
    values
        .get("profiles")
        .cloned()
        .ok_or_else(|| "the chart's values have no profiles".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_the_chart_profiles_are_the_default() {
        for (name, _) in PRESETS {
            let farm = Farm::load(name).unwrap();
            farm.profiles().unwrap();
        }
        let chart = Farm::load("a").unwrap().profiles().unwrap();
        assert_eq!(
            chart.resolve(StepKind::C2, Default::default()).concurrency,
            None
        );
    }

    #[test]
    fn a_farm_file_mistake_is_named() {
        let err = Farm::parse("nodes: []\npools: []\n").unwrap_err();
        assert!(err.contains("at least one node class"), "{err}");
        let err = Farm::parse(
            "nodes: [{name: a, count: 1, cores: 8, ccx: 1, memoryGib: 64, gpu: 1}]\npools: []\n",
        )
        .unwrap_err();
        assert!(err.contains("gpu"), "{err}");
    }
}
