//! A weighted choice among a rule's groups, one roll per request.

/// Choices with their cumulative weights; zero weights never win.
#[derive(Clone, Debug)]
pub struct WeightedChoice {
    /// `(cumulative weight, choice)`, ascending.
    steps: Vec<(u64, usize)>,
    total: u64,
}

impl WeightedChoice {
    /// From `(choice, weight)` pairs; `None` when no weight is above zero.
    pub fn new(weights: impl IntoIterator<Item = (usize, u32)>) -> Option<Self> {
        let mut total = 0u64;
        let mut steps = Vec::new();
        for (choice, weight) in weights {
            if weight > 0 {
                total += u64::from(weight);
                steps.push((total, choice));
            }
        }
        (total > 0).then_some(Self { steps, total })
    }

    /// The choice for `roll` in `0..total()`: the first whose cumulative weight exceeds it.
    pub fn pick(&self, roll: u64) -> usize {
        let i = self
            .steps
            .partition_point(|(cumulative, _)| *cumulative <= roll);
        // `roll < total` keeps `i` in range; clamp anyway rather than panic.
        self.steps[i.min(self.steps.len() - 1)].1
    }

    /// The sum of the weights.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Each choice with a weight above 0 and its weight, in the order given.
    pub fn weights(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let mut below = 0;
        self.steps.iter().map(move |&(cumulative, choice)| {
            let weight = cumulative - below;
            below = cumulative;
            (choice, weight)
        })
    }

    /// A random choice, by weight. With one choice no random number is drawn.
    pub fn choose(&self) -> usize {
        if self.steps.len() == 1 {
            return self.steps[0].1;
        }
        self.pick(fastrand::u64(..self.total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolls_fall_into_their_weights() {
        let c = WeightedChoice::new([(0, 90), (1, 0), (2, 10)]).unwrap();
        assert_eq!(c.total(), 100);
        assert_eq!(c.pick(0), 0);
        assert_eq!(c.pick(89), 0);
        assert_eq!(c.pick(90), 2);
        assert_eq!(c.pick(99), 2);
        // Every roll covered exactly: 90 to the first, none to the zero weight.
        let counts = (0..100).fold([0; 3], |mut n, r| {
            n[c.pick(r)] += 1;
            n
        });
        assert_eq!(counts, [90, 0, 10]);
    }

    #[test]
    fn weights_are_read_back_without_the_zeros() {
        let c = WeightedChoice::new([(0, 90), (1, 0), (2, 10)]).unwrap();
        assert_eq!(c.weights().collect::<Vec<_>>(), [(0, 90), (2, 10)]);
    }

    #[test]
    fn no_positive_weight_is_no_choice() {
        assert!(WeightedChoice::new([(0, 0)]).is_none());
        assert!(WeightedChoice::new([]).is_none());
    }

    #[test]
    fn random_choices_follow_the_weights() {
        let c = WeightedChoice::new([(0, 90), (1, 10)]).unwrap();
        let canary = (0..20_000).filter(|_| c.choose() == 1).count();
        // 10% of 20,000 is 2,000; the standard deviation is about 42.
        assert!((1_700..2_300).contains(&canary), "{canary}");
    }
}
