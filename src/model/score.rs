//! Engagement arithmetic (SPEC §4): half-life decay, late events, clamp; output rounding.

/// Rolling engagement `(E, tE)`: the value `E` as of event time `tE`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Engagement {
    pub value: f64,
    pub at: i64,
}

/// Decay settings. `half_life_ms = None` means no decay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decay {
    pub half_life_ms: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

#[inline]
fn factor(dt_ms: i64, half_life_ms: f64) -> f64 {
    // 2^(-dt/H); dt is non-negative here.
    (-(dt_ms as f64) / half_life_ms).exp2()
}

impl Engagement {
    pub fn zero(at: i64) -> Self {
        Engagement { value: 0.0, at }
    }

    /// Adds `points` at event time `t`; a late event decays as if it had come in order.
    pub fn add(&mut self, points: f64, t: i64, decay: &Decay) {
        match decay.half_life_ms {
            None => {
                self.value += points;
                self.at = self.at.max(t);
            }
            Some(h) if t >= self.at => {
                self.value = self.value * factor(t.saturating_sub(self.at), h) + points;
                self.at = t;
            }
            Some(h) => {
                self.value += points * factor(self.at.saturating_sub(t), h);
            }
        }
        if let Some(min) = decay.min {
            self.value = self.value.max(min);
        }
        if let Some(max) = decay.max {
            self.value = self.value.min(max);
        }
    }

    /// The engagement at time `t`; times before `tE` read the stored value (no growth).
    pub fn at_time(&self, t: i64, decay: &Decay) -> f64 {
        match decay.half_life_ms {
            Some(h) if t > self.at => self.value * factor(t.saturating_sub(self.at), h),
            _ => self.value,
        }
    }
}

/// Rounds to 4 decimals, half away from zero; never yields `-0.0`.
pub fn round4(x: f64) -> f64 {
    let r = (x * 10_000.0).round() / 10_000.0;
    if r == 0.0 {
        0.0
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn decay(h_days: i64) -> Decay {
        Decay {
            half_life_ms: Some((h_days * DAY) as f64),
            min: None,
            max: None,
        }
    }

    #[test]
    fn one_half_life_halves() {
        let d = decay(14);
        let mut e = Engagement::zero(0);
        e.add(100.0, 0, &d);
        assert!((e.at_time(14 * DAY, &d) - 50.0).abs() < 1e-9);
        assert!((e.at_time(28 * DAY, &d) - 25.0).abs() < 1e-9);
        e.add(10.0, 14 * DAY, &d);
        assert_eq!(e.at, 14 * DAY);
        assert!((e.value - 60.0).abs() < 1e-9);
    }

    #[test]
    fn late_event_decays_as_if_in_order() {
        let d = decay(14);
        let mut in_order = Engagement::zero(0);
        in_order.add(40.0, 7 * DAY, &d);
        in_order.add(30.0, 14 * DAY, &d);
        let mut late = Engagement::zero(0);
        late.add(30.0, 14 * DAY, &d);
        late.add(40.0, 7 * DAY, &d);
        assert_eq!(late.at, 14 * DAY, "a late event does not move tE back");
        assert!((in_order.value - late.value).abs() < 1e-9);
        assert!((late.value - (30.0 + 40.0 * 0.5f64.sqrt())).abs() < 1e-9);
    }

    #[test]
    fn no_half_life_means_no_decay() {
        let d = Decay {
            half_life_ms: None,
            min: None,
            max: None,
        };
        let mut e = Engagement::zero(0);
        e.add(5.0, 10, &d);
        e.add(5.0, 3, &d);
        assert_eq!(e.value, 10.0);
        assert_eq!(e.at, 10);
        assert_eq!(e.at_time(1_000 * DAY, &d), 10.0);
    }

    #[test]
    fn clamp_applies_after_each_addition() {
        let d = Decay {
            half_life_ms: None,
            min: Some(-100.0),
            max: Some(400.0),
        };
        let mut e = Engagement::zero(0);
        e.add(-100.0, 1, &d);
        e.add(-40.0, 2, &d);
        assert_eq!(e.value, -100.0);
        e.add(30.0, 3, &d);
        assert_eq!(
            e.value, -70.0,
            "clamped value is the new base, not the raw sum"
        );
        e.add(1000.0, 4, &d);
        assert_eq!(e.value, 400.0);
    }

    #[test]
    fn rounding_is_half_away_from_zero() {
        assert_eq!(round4(1.23455), 1.2346);
        assert_eq!(round4(-1.23455), -1.2346);
        assert_eq!(round4(2.5e-5), 0.0);
        assert_eq!(round4(5e-5), 0.0001);
        assert_eq!(round4(-0.00001).to_string(), "0");
        assert_eq!(round4(60.0), 60.0);
    }
}
