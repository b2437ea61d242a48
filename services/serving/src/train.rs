//! Training helpers shared by the services: seeded splits, gradient boosting, and the metrics
//! the portfolio reported. Everything is deterministic for a given seed.

pub use forust_ml::GradientBooster;
use forust_ml::Matrix;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use forust_ml::objective::ObjectiveType;

/// A row-major feature matrix with named columns.
#[derive(Debug, Clone)]
pub struct Features {
    pub names: &'static [&'static str],
    values: Vec<f64>,
}

impl Features {
    pub fn new(names: &'static [&'static str]) -> Self {
        Self {
            names,
            values: Vec::new(),
        }
    }

    pub fn push(&mut self, row: &[f64]) {
        assert_eq!(
            row.len(),
            self.names.len(),
            "feature row of the wrong width"
        );
        self.values.extend_from_slice(row);
    }

    pub fn rows(&self) -> usize {
        self.values.len() / self.names.len()
    }

    pub fn row(&self, i: usize) -> &[f64] {
        let w = self.names.len();
        &self.values[i * w..(i + 1) * w]
    }

    /// The rows in `idx`, laid out column-major as the booster wants them.
    fn column_major(&self, idx: &[usize]) -> Vec<f64> {
        let mut out = Vec::with_capacity(idx.len() * self.names.len());
        for col in 0..self.names.len() {
            out.extend(idx.iter().map(|&i| self.values[i * self.names.len() + col]));
        }
        out
    }
}

/// Gradient boosting settings; the defaults are those measured best on the BankChurn data.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct BoosterParams {
    pub iterations: usize,
    pub learning_rate: f32,
    pub max_depth: usize,
    pub l2: f32,
    pub min_leaf_weight: f32,
}

impl Default for BoosterParams {
    fn default() -> Self {
        Self {
            iterations: 200,
            learning_rate: 0.1,
            max_depth: 3,
            l2: 1.0,
            min_leaf_weight: 1.0,
        }
    }
}

/// Fits a booster on the rows `idx` of `x`.
pub fn fit_booster(
    objective: ObjectiveType,
    params: BoosterParams,
    x: &Features,
    idx: &[usize],
    y: &[f64],
    weights: &[f64],
    seed: u64,
) -> anyhow::Result<GradientBooster> {
    let data = x.column_major(idx);
    let matrix = Matrix::new(&data, idx.len(), x.names.len());
    let target: Vec<f64> = idx.iter().map(|&i| y[i]).collect();
    let weight: Vec<f64> = idx.iter().map(|&i| weights[i]).collect();
    let base_score = match objective {
        ObjectiveType::LogLoss => 0.0,
        ObjectiveType::SquaredLoss => target.iter().sum::<f64>() / target.len() as f64,
    };
    let mut booster = GradientBooster::default()
        .set_objective_type(objective)
        .set_iterations(params.iterations)
        .set_learning_rate(params.learning_rate)
        .set_max_depth(params.max_depth)
        .set_l2(params.l2)
        .set_min_leaf_weight(params.min_leaf_weight)
        .set_base_score(base_score)
        .set_initialize_base_score(false)
        .set_seed(seed);
    booster
        .fit(&matrix, &target, &weight, None)
        .map_err(|e| anyhow::anyhow!("gradient boosting failed: {e}"))?;
    Ok(booster)
}

/// Raw booster outputs (log-odds for classifiers) for the rows `idx` of `x`.
pub fn predict_rows(booster: &GradientBooster, x: &Features, idx: &[usize]) -> Vec<f64> {
    let data = x.column_major(idx);
    booster.predict(&Matrix::new(&data, idx.len(), x.names.len()), true)
}

/// The trees a booster predicts with (all, unless it stops early).
fn prediction_trees(booster: &GradientBooster) -> &[forust_ml::tree::Tree] {
    let n = booster.prediction_iteration.unwrap_or(booster.trees.len());
    &booster.trees[..n.min(booster.trees.len())]
}

/// Raw booster output for one row: the serving hot path. The same sum, in the same order, as
/// forust's `GradientBooster::predict`, without its thread pool and its allocation per tree.
pub fn predict_one(booster: &GradientBooster, row: &[f64]) -> f64 {
    prediction_trees(booster)
        .iter()
        .fold(booster.base_score, |sum, tree| {
            sum + tree.predict_row_from_row_slice(row, &booster.missing)
        })
}

/// A classifier's answer for one row, with how much each feature moved it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainedProbability {
    /// The raw output (log-odds), exactly [`predict_one`]'s.
    pub log_odds: f64,
    /// One per feature: how much it moved the predicted probability, walking down every tree
    /// (forust's "probability change" method).
    pub contributions: Vec<f64>,
    /// What the trees' roots alone predict; plus the contributions, the probability.
    pub base: f64,
}

/// A log-loss booster laid out to answer one row at a time with its probability-change
/// contributions (the serving hot path of a classifier that explains itself).
///
/// forust's `predict_contributions(ProbabilityChange)` takes the probability at every node on
/// the row's path, `1 / (1 + exp(-(before + weight)))`, where `before` is the log-odds the
/// earlier trees summed to: an `exp` and a division per node, and a second walk for the
/// prediction. Here each node keeps `exp(-weight)`, so its probability is
/// `1 / (1 + exp(-before) * exp(-weight))`, with `exp(-before)` carried from tree to tree by
/// the leaves' factors (and taken afresh every few trees): no `exp` on the way, and divisions
/// that do not wait on one another; the log-odds are summed exactly as [`predict_one`] sums
/// them, in the same walk.
///
/// The log-odds are forust's to the bit; the contributions and base differ from forust's by
/// rounding only (tested).
#[derive(Debug, Clone)]
pub struct ExplainingBooster {
    base_score: f64,
    /// Every tree's nodes in one array, children by their index in it.
    nodes: Vec<FlatNode>,
    /// Where each tree's root is in `nodes`.
    roots: Vec<u32>,
    /// Columns a row must have: one past the highest feature a split reads.
    features: usize,
}

/// A tree node with only what a walk and the probabilities read.
#[derive(Debug, Clone, Copy)]
struct FlatNode {
    split_value: f64,
    weight: f64,
    exp_neg_weight: f64,
    split_feature: u32,
    left: u32,
    right: u32,
    missing: u32,
    is_leaf: bool,
}

/// Trees between exact exponentials in [`ExplainingBooster::explain`]: a product of this many
/// factors is off by a few units in the last place at most.
const REANCHOR_EVERY: usize = 16;

impl ExplainingBooster {
    /// Lays out `booster`, which must have passed [`check_booster`] (NaN marks a missing
    /// value, every index in range, no cycle).
    pub fn new(booster: &GradientBooster) -> Self {
        let mut nodes = Vec::new();
        let mut roots = Vec::new();
        for tree in prediction_trees(booster) {
            let first = nodes.len();
            let index = |i: usize| u32::try_from(first + i).unwrap_or(u32::MAX);
            roots.push(index(0));
            nodes.extend(tree.nodes.iter().map(|n| FlatNode {
                split_value: n.split_value,
                weight: n.weight_value as f64,
                exp_neg_weight: (-(n.weight_value as f64)).exp(),
                split_feature: u32::try_from(n.split_feature).unwrap_or(u32::MAX),
                left: index(n.left_child),
                right: index(n.right_child),
                missing: index(n.missing_node),
                is_leaf: n.is_leaf,
            }));
        }
        let features = nodes
            .iter()
            .filter(|n| !n.is_leaf)
            .map(|n| n.split_feature as usize + 1)
            .max()
            .unwrap_or(0);
        Self {
            base_score: booster.base_score,
            nodes,
            roots,
            features,
        }
    }

    /// The log-odds of `row`, each feature's contribution to its probability, and the base.
    /// `row` holds at least every feature a split reads; NaN is a missing value.
    pub fn explain(&self, row: &[f64]) -> ExplainedProbability {
        assert!(
            row.len() >= self.features,
            "a row of {} features",
            row.len()
        );
        let mut contributions = vec![0.0; row.len()];
        let mut log_odds = self.base_score;
        let mut base = odds(log_odds);
        // The probability before each tree: the previous tree's leaf's.
        let mut before = base;
        let mut exp_neg_start = 1.0;
        let nodes = &self.nodes[..];
        for (t, &root) in self.roots.iter().enumerate() {
            let start = log_odds;
            if t % REANCHOR_EVERY == 0 {
                exp_neg_start = (-start).exp();
            }
            // odds(start + weight), from the two exponentials' product; far out, where the
            // product is no longer finite, directly.
            let odds_at = |node: &FlatNode| {
                let product = exp_neg_start * node.exp_neg_weight;
                if product.is_finite() {
                    1.0 / (1.0 + product)
                } else {
                    odds(start + node.weight)
                }
            };
            let mut node = &nodes[root as usize];
            let mut node_odds = odds_at(node);
            base += node_odds - before;
            while !node.is_leaf {
                let child = &nodes[next(node, row) as usize];
                let child_odds = odds_at(child);
                contributions[node.split_feature as usize] += child_odds - node_odds;
                node = child;
                node_odds = child_odds;
            }
            before = node_odds;
            log_odds = start + node.weight;
            exp_neg_start *= node.exp_neg_weight;
        }
        ExplainedProbability {
            log_odds,
            contributions,
            base,
        }
    }
}

/// The child of `node` that `row` goes down to.
fn next(node: &FlatNode, row: &[f64]) -> u32 {
    let value = row[node.split_feature as usize];
    if value.is_nan() {
        node.missing
    } else if value < node.split_value {
        node.left
    } else {
        node.right
    }
}

/// forust's log-odds to probability (its `utils::odds`).
fn odds(log_odds: f64) -> f64 {
    1.0 / (1.0 + (-log_odds).exp())
}

/// How much each feature moved this row's raw prediction: exact Shapley values of the trees
/// (forust's "Shapley" method). Returns one value per feature and the base (the model's
/// average raw prediction); base plus contributions is the raw prediction. For regressors.
pub fn shapley_contributions(booster: &GradientBooster, row: &[f64]) -> (Vec<f64>, f64) {
    let mut c = booster.predict_contributions(
        &Matrix::new(row, 1, row.len()),
        forust_ml::gradientbooster::ContributionsMethod::Shapley,
        false,
    );
    let base = c.pop().unwrap_or(0.0);
    (c, base)
}

pub fn sigmoid(log_odds: f64) -> f64 {
    1.0 / (1.0 + (-log_odds).exp())
}

/// Splits row indices into (train, test), keeping the class balance of `labels` in both.
pub fn stratified_split(labels: &[f64], test_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for class in [0.0, 1.0] {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        idx.shuffle(&mut rng);
        let n_test = (idx.len() as f64 * test_fraction).round() as usize;
        test.extend_from_slice(&idx[..n_test]);
        train.extend_from_slice(&idx[n_test..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

/// Splits `0..n` into (train, test) at random.
pub fn random_split(n: usize, test_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n_test = (n as f64 * test_fraction).round() as usize;
    let mut test = idx[..n_test].to_vec();
    let mut train = idx[n_test..].to_vec();
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

/// Deals `idx` into `k` folds, stratified by `labels` when given.
pub fn folds(idx: &[usize], labels: Option<&[f64]>, k: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_f01d);
    let mut shuffled = idx.to_vec();
    shuffled.shuffle(&mut rng);
    if let Some(labels) = labels {
        // A stable sort by class after the shuffle interleaves classes evenly across folds.
        shuffled.sort_by(|a, b| labels[*a].total_cmp(&labels[*b]));
    }
    let mut out = vec![Vec::new(); k];
    for (n, i) in shuffled.into_iter().enumerate() {
        out[n % k].push(i);
    }
    out
}

/// Binary classification metrics at a fixed decision threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassificationMetrics {
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub roc_auc: f64,
}

impl ClassificationMetrics {
    pub fn compute(y: &[f64], probability: &[f64], threshold: f64) -> Self {
        let (mut tp, mut fp, mut tn, mut fneg) = (0.0, 0.0, 0.0, 0.0);
        for (&t, &p) in y.iter().zip(probability) {
            match (t == 1.0, p >= threshold) {
                (true, true) => tp += 1.0,
                (false, true) => fp += 1.0,
                (false, false) => tn += 1.0,
                (true, false) => fneg += 1.0,
            }
        }
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let precision = ratio(tp, tp + fp);
        let recall = ratio(tp, tp + fneg);
        Self {
            accuracy: ratio(tp + tn, tp + tn + fp + fneg),
            precision,
            recall,
            f1: ratio(2.0 * precision * recall, precision + recall),
            roc_auc: roc_auc(y, probability),
        }
    }
}

/// Area under the ROC curve, with ties counted as half (the Mann-Whitney statistic).
pub fn roc_auc(y: &[f64], score: &[f64]) -> f64 {
    let mut order: Vec<usize> = (0..y.len()).collect();
    order.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && score[order[j + 1]] == score[order[i]] {
            j += 1;
        }
        let mid_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            if y[k] == 1.0 {
                rank_sum_pos += mid_rank;
            }
        }
        i = j + 1;
    }
    let pos = y.iter().filter(|&&t| t == 1.0).count() as f64;
    let neg = y.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return 0.5;
    }
    (rank_sum_pos - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Regression metrics as the CarVision portfolio reported them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    pub rmse: f64,
    pub mae: f64,
    pub r2: f64,
    /// Mean absolute percentage error, in percent.
    pub mape: f64,
}

impl RegressionMetrics {
    pub fn compute(y: &[f64], prediction: &[f64]) -> Self {
        let n = y.len() as f64;
        let mean = y.iter().sum::<f64>() / n;
        let (mut se, mut ae, mut ape, mut tot) = (0.0, 0.0, 0.0, 0.0);
        for (&t, &p) in y.iter().zip(prediction) {
            se += (t - p).powi(2);
            ae += (t - p).abs();
            ape += ((t - p) / t).abs();
            tot += (t - mean).powi(2);
        }
        Self {
            rmse: (se / n).sqrt(),
            mae: ae / n,
            r2: 1.0 - se / tot,
            mape: 100.0 * ape / n,
        }
    }
}

/// The class weight and score chosen for a binary classifier on out-of-fold predictions.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct BinaryTraining {
    pub positive_class_weight: f64,
    pub validation_score: f64,
}

/// What a binary classifier's class weight is chosen to maximise, at threshold 0.5.
#[derive(Debug, Clone, Copy)]
pub enum Selection {
    F1,
    /// The mean of accuracy and F1: for a target judged on both.
    AccuracyAndF1,
}

impl Selection {
    fn score(self, m: &ClassificationMetrics) -> f64 {
        match self {
            Selection::F1 => m.f1,
            Selection::AccuracyAndF1 => (m.accuracy + m.f1) / 2.0,
        }
    }
}

const CLASS_WEIGHT_GRID: [f64; 7] = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0];
const VALIDATION_FOLDS: usize = 4;

/// Trains a binary classifier whose decisions are made at probability 0.5, so the API's
/// threshold is the tuned one: the positive-class weight is chosen from out-of-fold
/// predictions on the training rows (never the test rows), then the booster is refit on all
/// training rows.
pub fn fit_binary(
    params: BoosterParams,
    x: &Features,
    y: &[f64],
    train: &[usize],
    selection: Selection,
    seed: u64,
) -> anyhow::Result<(GradientBooster, BinaryTraining)> {
    let folds = folds(train, Some(y), VALIDATION_FOLDS, seed);
    let mut best: Option<BinaryTraining> = None;
    for weight in CLASS_WEIGHT_GRID {
        let weights: Vec<f64> = y
            .iter()
            .map(|&t| if t == 1.0 { weight } else { 1.0 })
            .collect();
        let (mut truth, mut probability) = (Vec::new(), Vec::new());
        for (k, held_out) in folds.iter().enumerate() {
            let fit_idx: Vec<usize> = folds
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != k)
                .flat_map(|(_, f)| f.iter().copied())
                .collect();
            let booster = fit_booster(
                ObjectiveType::LogLoss,
                params,
                x,
                &fit_idx,
                y,
                &weights,
                seed,
            )?;
            probability.extend(predict_rows(&booster, x, held_out).into_iter().map(sigmoid));
            truth.extend(held_out.iter().map(|&i| y[i]));
        }
        let score = selection.score(&ClassificationMetrics::compute(&truth, &probability, 0.5));
        if best.is_none_or(|b| score > b.validation_score) {
            best = Some(BinaryTraining {
                positive_class_weight: weight,
                validation_score: score,
            });
        }
    }
    let chosen = best.expect("the weight grid is not empty");
    let weights: Vec<f64> = y
        .iter()
        .map(|&t| {
            if t == 1.0 {
                chosen.positive_class_weight
            } else {
                1.0
            }
        })
        .collect();
    let booster = fit_booster(ObjectiveType::LogLoss, params, x, train, y, &weights, seed)?;
    Ok((booster, chosen))
}

/// Fewest rows any service trains on: fewer cannot give a held-out evaluation worth reading.
pub const MIN_ROWS: usize = 50;
/// Fewest rows of each class a classifier trains on, so that every validation fold and the
/// held-out part hold both classes.
pub const MIN_ROWS_PER_CLASS: usize = 10;

/// Refuses a dataset that cannot give a meaningful model: too few rows.
pub fn ensure_enough_rows(rows: usize, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        rows >= MIN_ROWS,
        "only {rows} {what}: at least {MIN_ROWS} are needed to train and evaluate a model"
    );
    Ok(())
}

/// Refuses a classification dataset that cannot give a meaningful model: too few rows, or
/// too few of either class in `target` (0/1).
pub fn ensure_trainable_classes(y: &[f64], target: &str) -> anyhow::Result<()> {
    ensure_enough_rows(y.len(), "rows")?;
    let positives = y.iter().filter(|&&t| t == 1.0).count();
    let negatives = y.len() - positives;
    anyhow::ensure!(
        positives > 0 && negatives > 0,
        "every row has {target} = {}: a classifier needs examples of both classes",
        if positives > 0 { 1 } else { 0 }
    );
    anyhow::ensure!(
        positives.min(negatives) >= MIN_ROWS_PER_CLASS,
        "only {} rows with {target} = {}: at least {MIN_ROWS_PER_CLASS} of each class are needed",
        positives.min(negatives),
        if positives < negatives { 1 } else { 0 }
    );
    Ok(())
}

/// Trains and evaluates a binary classifier as every classification service does: a seeded
/// stratified 80/20 split, the class weight chosen out of fold on the training part
/// ([`fit_binary`]), metrics on the held-out part at threshold 0.5. Returns the metrics as the
/// common part of `metrics.json`. Refuses data that cannot give a meaningful model
/// ([`ensure_trainable_classes`]); `target` names the label column in those errors.
pub fn train_binary_classifier(
    params: BoosterParams,
    x: &Features,
    y: &[f64],
    target: &str,
    selection: Selection,
    seed: u64,
) -> anyhow::Result<(GradientBooster, BinaryTraining, serde_json::Value)> {
    ensure_trainable_classes(y, target)?;
    let (train_idx, test_idx) = stratified_split(y, 0.2, seed);
    anyhow::ensure!(
        !test_idx.is_empty(),
        "the held-out split is empty: nothing to evaluate on"
    );
    let (booster, training) = fit_binary(params, x, y, &train_idx, selection, seed)?;
    let probability: Vec<f64> = predict_rows(&booster, x, &test_idx)
        .into_iter()
        .map(sigmoid)
        .collect();
    let truth: Vec<f64> = test_idx.iter().map(|&i| y[i]).collect();
    let test = ClassificationMetrics::compute(&truth, &probability, 0.5);
    let metrics = serde_json::json!({
        "model": "gradient boosting (forust-ml)",
        "params": params,
        "rows": x.rows(),
        "train_rows": train_idx.len(),
        "test_rows": test_idx.len(),
        "positive_rate": y.iter().sum::<f64>() / y.len() as f64,
        "positive_class_weight": training.positive_class_weight,
        "validation_score": training.validation_score,
        "accuracy": test.accuracy,
        "f1": test.f1,
        "roc_auc": test.roc_auc,
        "precision": test.precision,
        "recall": test.recall,
    });
    Ok((booster, training, metrics))
}

/// Checks a booster read from disk before it predicts anything: forust indexes its nodes
/// without bounds checks of its own and walks them until a leaf, so a bad index panics and a
/// cycle spins forever. Every tree must be a tree (each node reached once from the root),
/// every split must read one of `features` columns, every value must be finite, and the
/// objective must be the one the service predicts with.
pub fn check_booster(
    booster: &GradientBooster,
    objective: ObjectiveType,
    features: usize,
) -> anyhow::Result<()> {
    use anyhow::ensure;
    let name = |o: &ObjectiveType| match o {
        ObjectiveType::LogLoss => "LogLoss",
        ObjectiveType::SquaredLoss => "SquaredLoss",
    };
    ensure!(
        name(&booster.objective_type) == name(&objective),
        "the booster's objective is {}, this service predicts with {}",
        name(&booster.objective_type),
        name(&objective)
    );
    ensure!(
        booster.base_score.is_finite(),
        "the base score is not finite"
    );
    // Inputs use NaN for missing values; forust panics on a NaN when `missing` is anything else.
    ensure!(
        booster.missing.is_nan(),
        "the missing-value marker is not NaN"
    );
    ensure!(!booster.trees.is_empty(), "the booster has no trees");
    if let Some(n) = booster.prediction_iteration {
        ensure!(
            n <= booster.trees.len(),
            "it predicts with {n} trees but has {}",
            booster.trees.len()
        );
    }
    for (t, tree) in booster.trees.iter().enumerate() {
        let nodes = &tree.nodes;
        ensure!(!nodes.is_empty(), "tree {t} has no nodes");
        let mut reached = vec![false; nodes.len()];
        let mut pending = vec![0usize];
        reached[0] = true;
        while let Some(i) = pending.pop() {
            let node = &nodes[i];
            ensure!(
                node.weight_value.is_finite(),
                "tree {t}, node {i}: the weight is not finite"
            );
            if node.is_leaf {
                continue;
            }
            ensure!(
                node.split_feature < features,
                "tree {t}, node {i}: splits on feature {} of {features}",
                node.split_feature
            );
            ensure!(
                !node.split_value.is_nan(),
                "tree {t}, node {i}: the split value is NaN"
            );
            let mut children = vec![node.left_child, node.right_child, node.missing_node];
            children.sort_unstable();
            children.dedup();
            for child in children {
                ensure!(
                    child < nodes.len(),
                    "tree {t}, node {i}: child {child} is out of range ({} nodes)",
                    nodes.len()
                );
                ensure!(
                    !reached[child],
                    "tree {t}, node {i}: child {child} is reached twice (a cycle or shared node)"
                );
                reached[child] = true;
                pending.push(child);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_booster() -> GradientBooster {
        let mut x = Features::new(&["a", "b"]);
        let mut y = Vec::new();
        for i in 0..200 {
            let a = f64::from(i % 17);
            x.push(&[a, f64::from(i % 5)]);
            y.push(if a > 8.0 { 1.0 } else { 0.0 });
        }
        let idx: Vec<usize> = (0..200).collect();
        let params = BoosterParams {
            iterations: 5,
            ..BoosterParams::default()
        };
        fit_booster(
            ObjectiveType::LogLoss,
            params,
            &x,
            &idx,
            &y,
            &vec![1.0; 200],
            1,
        )
        .unwrap()
    }

    fn first_split(booster: &GradientBooster) -> (usize, usize) {
        booster
            .trees
            .iter()
            .enumerate()
            .find_map(|(t, tree)| tree.nodes.iter().position(|n| !n.is_leaf).map(|i| (t, i)))
            .expect("a tree with a split")
    }

    /// A classifier on three features with missing values, deep enough to have paths of
    /// every length.
    fn classifier() -> (GradientBooster, Vec<[f64; 3]>) {
        let mut x = Features::new(&["a", "b", "c"]);
        let mut rows = Vec::new();
        let mut y = Vec::new();
        for i in 0..400 {
            let a = f64::from(i % 23);
            let b = if i % 11 == 0 {
                f64::NAN
            } else {
                f64::from(i % 7)
            };
            let c = f64::from((i * 13) % 31) / 3.0;
            rows.push([a, b, c]);
            x.push(&[a, b, c]);
            y.push(if a + c > 14.0 || b == 3.0 { 1.0 } else { 0.0 });
        }
        let params = BoosterParams {
            iterations: 40,
            max_depth: 4,
            ..BoosterParams::default()
        };
        let idx: Vec<usize> = (0..rows.len()).collect();
        let booster = fit_booster(
            ObjectiveType::LogLoss,
            params,
            &x,
            &idx,
            &y,
            &vec![1.0; rows.len()],
            3,
        )
        .unwrap();
        (booster, rows)
    }

    #[test]
    fn one_walk_gives_forusts_prediction_to_the_bit_and_its_contributions() {
        let (booster, rows) = classifier();
        // A base score far out, where the path's product overflows and each node's
        // probability is taken on its own.
        let mut far: GradientBooster =
            serde_json::from_str(&serde_json::to_string(&booster).unwrap()).unwrap();
        far.base_score = -400.0;
        for booster in [booster, far] {
            agrees_with_forust(&booster, &rows);
        }
    }

    fn agrees_with_forust(booster: &GradientBooster, rows: &[[f64; 3]]) {
        let explaining = ExplainingBooster::new(booster);
        for row in rows {
            let matrix = Matrix::new(row, 1, row.len());
            let forust_raw = booster.predict(&matrix, false)[0];
            let mut forust_contributions = booster.predict_contributions(
                &matrix,
                forust_ml::gradientbooster::ContributionsMethod::ProbabilityChange,
                false,
            );
            let forust_base = forust_contributions.pop().unwrap();
            assert_eq!(predict_one(booster, row).to_bits(), forust_raw.to_bits());
            let ours = explaining.explain(row);
            assert_eq!(ours.log_odds.to_bits(), forust_raw.to_bits(), "{row:?}");
            assert!((ours.base - forust_base).abs() < 1e-13, "{row:?}");
            for (a, b) in ours.contributions.iter().zip(&forust_contributions) {
                assert!((a - b).abs() < 1e-13, "{a} vs {b} for {row:?}");
            }
            // They still add up to the probability.
            let total = ours.base + ours.contributions.iter().sum::<f64>();
            assert!((total - sigmoid(ours.log_odds)).abs() < 1e-12, "{row:?}");
        }
    }

    #[test]
    fn a_trained_booster_passes_and_lying_ones_are_refused() {
        let good = small_booster();
        check_booster(&good, ObjectiveType::LogLoss, 2).unwrap();
        let refused = |edit: &dyn Fn(&mut GradientBooster), features: usize| {
            let mut b: GradientBooster =
                serde_json::from_str(&serde_json::to_string(&good).unwrap()).unwrap();
            edit(&mut b);
            match check_booster(&b, ObjectiveType::LogLoss, features) {
                Err(e) => e.to_string(),
                Ok(()) => panic!("not refused"),
            }
        };
        let (t, i) = first_split(&good);
        let msg = refused(&|b| b.trees[t].nodes[i].left_child = 999, 2);
        assert!(msg.contains("out of range"), "{msg}");
        let msg = refused(&|b| b.trees[t].nodes[i].right_child = i, 2);
        assert!(msg.contains("reached twice"), "{msg}");
        let msg = refused(&|b| b.trees[t].nodes[i].split_feature = 7, 2);
        assert!(msg.contains("feature 7 of 2"), "{msg}");
        let msg = refused(&|_| {}, 0);
        assert!(
            msg.contains("of 0"),
            "a model with more features than served: {msg}"
        );
        let msg = refused(&|b| b.trees[t].nodes[0].weight_value = f32::NAN, 2);
        assert!(msg.contains("not finite"), "{msg}");
        let msg = refused(&|b| b.prediction_iteration = Some(99), 2);
        assert!(msg.contains("99 trees"), "{msg}");
        let msg = refused(&|b| b.trees[t].nodes.clear(), 2);
        assert!(msg.contains("no nodes"), "{msg}");
        let err = check_booster(&good, ObjectiveType::SquaredLoss, 2).unwrap_err();
        assert!(err.to_string().contains("objective"), "{err}");
    }

    #[test]
    fn degenerate_classification_data_is_refused() {
        let err = |y: &[f64]| {
            ensure_trainable_classes(y, "Exited")
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[1.0]).contains("only 1 rows"));
        assert!(err(&[0.0; 10]).contains("only 10 rows"));
        assert!(
            err(&[0.0; 500]).contains("every row has Exited = 0"),
            "{}",
            err(&[0.0; 500])
        );
        let mut few_positives = vec![0.0; 500];
        few_positives[..3].fill(1.0);
        assert!(err(&few_positives).contains("only 3 rows with Exited = 1"));
        let mut fine = vec![0.0; 100];
        fine[..20].fill(1.0);
        ensure_trainable_classes(&fine, "Exited").unwrap();
    }

    #[test]
    fn auc_of_perfect_random_and_inverted_scores() {
        let y = [0.0, 0.0, 1.0, 1.0];
        assert_eq!(roc_auc(&y, &[0.1, 0.2, 0.8, 0.9]), 1.0);
        assert_eq!(roc_auc(&y, &[0.9, 0.8, 0.2, 0.1]), 0.0);
        assert_eq!(roc_auc(&y, &[0.5, 0.5, 0.5, 0.5]), 0.5);
    }

    #[test]
    fn classification_metrics_match_a_hand_count() {
        // tp=2, fp=1, tn=1, fn=0
        let m = ClassificationMetrics::compute(&[1.0, 1.0, 0.0, 0.0], &[0.9, 0.6, 0.7, 0.1], 0.5);
        assert_eq!(m.accuracy, 0.75);
        assert!((m.precision - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.recall, 1.0);
        assert!((m.f1 - 0.8).abs() < 1e-12);
    }

    #[test]
    fn regression_metrics_of_a_known_error() {
        let m = RegressionMetrics::compute(&[100.0, 200.0, 300.0], &[110.0, 190.0, 300.0]);
        assert!((m.rmse - (200.0f64 / 3.0).sqrt()).abs() < 1e-9);
        assert!((m.mae - 20.0 / 3.0).abs() < 1e-9);
        assert!((m.r2 - (1.0 - 200.0 / 20000.0)).abs() < 1e-12);
    }

    #[test]
    fn stratified_split_keeps_class_balance_and_is_seeded() {
        let y: Vec<f64> = (0..1000)
            .map(|i| if i % 5 == 0 { 1.0 } else { 0.0 })
            .collect();
        let (train, test) = stratified_split(&y, 0.2, 7);
        assert_eq!(test.len(), 200);
        assert_eq!(train.len() + test.len(), 1000);
        assert_eq!(test.iter().filter(|&&i| y[i] == 1.0).count(), 40);
        assert_eq!(stratified_split(&y, 0.2, 7), (train.clone(), test.clone()));
        assert_ne!(stratified_split(&y, 0.2, 8).1, test);
    }
}
