//! Scoring: a model family's rule over `logit_scale · cosine + logit_bias`
//! (for CLIP, a softmax over the candidate labels; for SigLIP, a sigmoid per
//! label), argmax and ranking.

/// L2-normalises a vector in place. A zero vector is left as is.
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Dot product (the cosine, for normalised vectors).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Zero-shot probabilities of `image` (normalised) against `labels`
/// (normalised), as transformers' pipeline computes them: a softmax over
/// `logit_scale · cosine`.
pub fn label_probabilities<L: AsRef<[f32]>>(
    image: &[f32],
    labels: &[L],
    logit_scale: f32,
) -> Vec<f32> {
    Scorer {
        rule: ScoringRule::Softmax,
        scale: logit_scale,
        bias: 0.0,
    }
    .probabilities(image, labels)
}

/// How a model family turns `scale · cosine + bias` into label scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ScoringRule {
    /// A softmax over the labels (CLIP): a row's scores sum to 1, and each
    /// depends on which other labels are offered. The bias cancels out.
    Softmax,
    /// A sigmoid per label (SigLIP): each score is the probability that
    /// the label fits, independent of the other labels; a row's scores need
    /// not sum to 1, and all of them may be low.
    Sigmoid,
}

impl ScoringRule {
    /// Its name, as `clipql model info` and `EXPLAIN` show it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Softmax => "softmax",
            Self::Sigmoid => "sigmoid",
        }
    }

    /// What a score means under this rule, in a few words.
    pub fn meaning(self) -> &'static str {
        match self {
            Self::Softmax => "softmax over the labels: a row's scores sum to 1",
            Self::Sigmoid => "sigmoid per label: independent probabilities",
        }
    }
}

/// What training left in a model's combined graph: the multiplier of the
/// cosine (`exp(logit_scale)`, e.g. 100 for CLIP) and the bias added to each
/// logit (SigLIP's `logit_bias`; 0 for CLIP, which has none).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainedLogits {
    /// `exp(logit_scale)`.
    pub scale: f32,
    /// `logit_bias`.
    #[serde(default)]
    pub bias: f32,
}

/// A model's scoring: its family's rule with the scale and bias to apply
/// (the trained `logit_scale` and `logit_bias`, or `clip.logit_scale`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scorer {
    /// The rule.
    pub rule: ScoringRule,
    /// The multiplier of the cosine.
    pub scale: f32,
    /// Added to every logit (0 for CLIP, which has none).
    pub bias: f32,
}

impl Scorer {
    /// The scores of `image` (normalised) against `labels` (normalised).
    pub fn probabilities<L: AsRef<[f32]>>(&self, image: &[f32], labels: &[L]) -> Vec<f32> {
        let logits: Vec<f32> = labels
            .iter()
            .map(|l| self.scale * dot(image, l.as_ref()) + self.bias)
            .collect();
        match self.rule {
            ScoringRule::Softmax => softmax(&logits),
            ScoringRule::Sigmoid => logits.iter().map(|&l| sigmoid(l)).collect(),
        }
    }
}

/// The logistic function, without overflow for logits of either sign.
pub fn sigmoid(logit: f32) -> f32 {
    if logit >= 0.0 {
        1.0 / (1.0 + (-logit).exp())
    } else {
        let e = logit.exp();
        e / (1.0 + e)
    }
}

/// A prompt ensemble's embedding, as the CLIP paper builds one: the mean of
/// its prompts' normalised embeddings, normalised again. One prompt gives
/// its own embedding back.
pub fn ensemble(members: &[&[f32]]) -> Vec<f32> {
    let dim = members.first().map_or(0, |m| m.len());
    let mut mean = vec![0.0f32; dim];
    for m in members {
        for (acc, x) in mean.iter_mut().zip(m.iter()) {
            *acc += x;
        }
    }
    l2_normalize(&mut mean);
    mean
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Index of the highest probability; the first wins a tie.
pub fn argmax(values: &[f32]) -> Option<usize> {
    values
        .iter()
        .enumerate()
        .fold(None, |best: Option<(usize, f32)>, (i, &v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((i, v)),
        })
        .map(|(i, _)| i)
}

/// Indices sorted by descending probability (stable for ties).
pub fn ranked(values: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    idx
}

/// The first `k` of [`ranked`], without sorting the rest: with 1,000
/// labels and `k = 5`, a selection then a sort of five.
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    // Descending value, then ascending index: `ranked`'s stable order as a
    // total order, so the selection gives exactly its prefix.
    let order = |a: &usize, b: &usize| values[*b].total_cmp(&values[*a]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..values.len()).collect();
    if k < idx.len() {
        if k == 0 {
            return Vec::new();
        }
        idx.select_nth_unstable_by(k - 1, order);
        idx.truncate(k);
    }
    idx.sort_by(order);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_survives_large_logits() {
        let p = softmax(&[1000.0, 999.0, -1000.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[0] > p[1] && p[2] == 0.0);
    }

    #[test]
    fn sigmoid_scores_each_label_on_its_own() {
        // One label at cosine 0.1 and one at -0.1, scale 10, bias -1:
        // logits 0 and -2, so 1/2 and 1/(1+e^2), whatever else is offered.
        let image = [1.0, 0.0];
        let labels = [vec![0.1, 0.995], vec![-0.1, 0.995]];
        let scorer = Scorer {
            rule: ScoringRule::Sigmoid,
            scale: 10.0,
            bias: -1.0,
        };
        let p = scorer.probabilities(&image, &labels);
        assert!((p[0] - 0.5).abs() < 1e-6, "{p:?}");
        assert!((p[1] - 1.0 / (1.0 + 2f32.exp())).abs() < 1e-6, "{p:?}");
        assert_eq!(scorer.probabilities(&image, &labels[1..])[0], p[1]);
        assert_eq!((sigmoid(-1000.0), sigmoid(1000.0)), (0.0, 1.0));
        // A softmax ignores the bias.
        let soft = |bias| {
            Scorer {
                rule: ScoringRule::Softmax,
                scale: 10.0,
                bias,
            }
            .probabilities(&image, &labels)
        };
        let (a, b) = (soft(0.0), soft(-5.0));
        assert!(
            a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6),
            "{a:?} {b:?}"
        );
    }

    #[test]
    fn an_ensemble_is_the_normalised_mean_direction() {
        let e = ensemble(&[&[1.0, 0.0], &[0.0, 1.0]]);
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!((e[0] - h).abs() < 1e-6 && (e[1] - h).abs() < 1e-6, "{e:?}");
        let one = ensemble(&[&[0.6, 0.8]]);
        assert!(
            (one[0] - 0.6).abs() < 1e-6 && (one[1] - 0.8).abs() < 1e-6,
            "{one:?}"
        );
        assert!(ensemble(&[]).is_empty());
    }

    #[test]
    fn probabilities_follow_cosine() {
        let mut img = vec![1.0, 1.0];
        l2_normalize(&mut img);
        let labels = [vec![1.0, 0.0], vec![0.0, -1.0]];
        let p = label_probabilities(&img, &labels, 100.0);
        assert_eq!(argmax(&p), Some(0));
        assert_eq!(ranked(&p), vec![0, 1]);
        assert_eq!(argmax(&[0.5, 0.5]), Some(0));
        assert_eq!(argmax(&[]), None);
    }

    #[test]
    fn top_k_is_the_prefix_of_ranked() {
        // Few distinct values, so ties are everywhere.
        let mut state = 12345u32;
        let values: Vec<f32> = (0..300)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 28) as f32 / 16.0
            })
            .collect();
        let all = ranked(&values);
        for k in [0, 1, 2, 5, 17, 299, 300, 301, 10_000] {
            assert_eq!(top_k(&values, k), all[..k.min(all.len())], "k = {k}");
        }
        assert!(top_k(&[], 3).is_empty());
    }
}
