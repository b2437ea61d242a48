//! Helpers for the services' synthetic data generators: one seeded, portable random source.

pub use rand;
pub use rand_distr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The random source of every generator: ChaCha8 gives the same stream on every platform and
/// release, so a seed always yields the same file.
pub type SynthRng = ChaCha8Rng;

pub fn rng(seed: u64) -> SynthRng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// True with probability `p`.
pub fn chance(rng: &mut SynthRng, p: f64) -> bool {
    rng.gen_bool(p.clamp(0.0, 1.0))
}

/// Picks an item by relative weight.
pub fn pick<'a, T>(rng: &mut SynthRng, items: &'a [(T, f64)]) -> &'a T {
    let total: f64 = items.iter().map(|(_, w)| w).sum();
    let mut x = rng.gen_range(0.0..total);
    for (item, w) in items {
        if x < *w {
            return item;
        }
        x -= w;
    }
    &items[items.len() - 1].0
}

/// Rounds to `decimals` places, as the public files print their numbers.
pub fn round_to(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}
