//! Scoring: a model family's rule over `logit_scale · cosine` (for CLIP,
//! a softmax over the candidate labels), argmax and ranking.

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
    }
    .probabilities(image, labels)
}

/// How a model family turns `scale · cosine` into label scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ScoringRule {
    /// A softmax over the labels (CLIP): a row's scores sum to 1, and each
    /// depends on which other labels are offered.
    Softmax,
}

/// A model's scoring: its family's rule with the scale to apply (the
/// trained `logit_scale`, or `clip.logit_scale`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scorer {
    /// The rule.
    pub rule: ScoringRule,
    /// The multiplier of the cosine.
    pub scale: f32,
}

impl Scorer {
    /// The scores of `image` (normalised) against `labels` (normalised).
    pub fn probabilities<L: AsRef<[f32]>>(&self, image: &[f32], labels: &[L]) -> Vec<f32> {
        let logits: Vec<f32> = labels
            .iter()
            .map(|l| self.scale * dot(image, l.as_ref()))
            .collect();
        match self.rule {
            ScoringRule::Softmax => softmax(&logits),
        }
    }
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
