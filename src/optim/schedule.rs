//! Linear warmup then linear decay to 0, as HF `get_linear_schedule_with_warmup`.

/// The learning-rate multiplier as a function of the number of updates already made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearSchedule {
    /// Updates over which the multiplier rises linearly from 0 to 1.
    pub warmup_steps: usize,
    /// Updates of the whole run; the multiplier reaches 0 here.
    pub total_steps: usize,
}

impl LinearSchedule {
    /// `step / warmup` during warmup, then `(total - step) / (total - warmup)`, never below 0.
    /// `step` counts updates already made, so the first update uses `factor(0)` (0 with warmup).
    pub fn factor(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return step as f64 / self.warmup_steps.max(1) as f64;
        }
        let left = self.total_steps.saturating_sub(step) as f64;
        (left / self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64).max(0.0)
    }

    /// `base_lr · factor(step)`.
    pub fn lr(&self, base_lr: f64, step: usize) -> f64 {
        base_lr * self.factor(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        let s = LinearSchedule {
            warmup_steps: 4,
            total_steps: 12,
        };
        let f: Vec<f64> = (0..14).map(|t| s.factor(t)).collect();
        assert_eq!(&f[..5], &[0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(f[8], 0.5);
        assert_eq!(f[12], 0.0);
        assert_eq!(f[13], 0.0);
        let none = LinearSchedule {
            warmup_steps: 0,
            total_steps: 10,
        };
        assert_eq!(none.factor(0), 1.0);
        assert_eq!(none.lr(2e-5, 5), 1e-5);
    }
}
