//! Matrix products against frozen weights in bf16 on Intel AMX (Sapphire Rapids and later):
//! operands rounded to bf16 (round to nearest even), products accumulated in f32 — the mixed
//! precision of PyTorch's CPU autocast, at the tile unit's rate instead of AVX-512 FMA's.
//!
//! A tile multiply (`tdpbf16ps`) takes a 16 × 32 bf16 left tile, a 32 × 16 bf16 right tile stored
//! as 16 rows of 16 column pairs (the "VNNI" layout: two consecutive contraction indices side by
//! side) and adds the 16 × 16 f32 product to an accumulator tile. [`PackedRight`] holds a weight
//! in that layout, one 1 KiB tile after another; [`matmul`] converts the left operand to bf16 and
//! runs 32 × 32 output blocks (four accumulators) over the contraction, spread over rayon's
//! threads by column pair.
//!
//! Linux grants a process the 8 KiB tile state only on request (`arch_prctl`), which
//! [`available`] makes once.

use std::sync::OnceLock;

use rayon::prelude::*;

/// Contraction elements (bf16) per tile row: 64 bytes.
const TILE_K: usize = 32;
/// Rows of a tile.
const TILE_ROWS: usize = 16;
/// Output block handled by one kernel call: 32 × 32 (2 × 2 accumulator tiles).
const BLOCK: usize = 32;
/// bf16 elements of one packed right tile (16 rows × 64 bytes).
const TILE_ELEMS: usize = TILE_ROWS * TILE_K;
/// Rows of the left operand kept hot in the cache while every column pair passes over them.
const ROW_GROUP: usize = 256;

/// Whether this CPU and OS run AMX bf16 tile multiplies (CPUID leaf 7 AMX-TILE and AMX-BF16,
/// and Linux granting the tile state). Checked once per process.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    // CPUID.(EAX=7, ECX=0):EDX bit 22 = AMX-BF16, bit 24 = AMX-TILE.
    let leaf = std::arch::x86_64::__cpuid_count(7, 0);
    if leaf.edx & (1 << 22) == 0 || leaf.edx & (1 << 24) == 0 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a request for permission; it changes no memory of this process.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// `x` rounded to bf16, to nearest even (NaN stays NaN).
#[inline(always)]
fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let rounding = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(rounding) >> 16) as u16
}

/// `src` rounded to bf16 into `dst` (equal lengths), 16 at a time with AVX-512 where the CPU
/// has it: the portable build compiles for baseline x86-64 (SSE2), where this conversion of
/// each product's left operand took about 6 % of a training step.
fn round_to_bf16(dst: &mut [u16], src: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if wide_vectors() {
        // SAFETY: the CPU has the features `round_to_bf16_avx512` is compiled for.
        unsafe { round_to_bf16_avx512(dst, src) };
        return;
    }
    round_to_bf16_plain(dst, src);
}

#[inline(always)]
fn round_to_bf16_plain(dst: &mut [u16], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "bf16 rounding: lengths differ");
    dst.iter_mut()
        .zip(src)
        .for_each(|(d, s)| *d = bf16_bits(*s));
}

/// The same loop compiled for AVX-512 (the compiler vectorizes it 16 wide).
///
/// # Safety
/// The CPU must have AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn round_to_bf16_avx512(dst: &mut [u16], src: &[f32]) {
    round_to_bf16_plain(dst, src);
}

/// Whether this CPU has AVX-512 F and BW (checked once per process).
#[cfg(target_arch = "x86_64")]
fn wide_vectors() -> bool {
    static WIDE: OnceLock<bool> = OnceLock::new();
    *WIDE.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
    })
}

/// The right operand of `a · B` (`B` is `[k, n]`: contraction by output column) in AMX's tile
/// layout, zero-padded to whole tiles: `[n / 16][k / 32][16 rows][16 columns][2]`, where row `r`
/// of tile `(j, s)` holds `B[32 s + 2 r + p, 16 j + c]` at `[c][p]`.
pub struct PackedRight {
    k: usize,
    n: usize,
    k_steps: usize,
    /// Column blocks of 16, rounded up to an even count (kernels take two at a time).
    n_blocks: usize,
    data: Vec<u16>,
}

impl PackedRight {
    /// Packs `B = Wᵀ` (`transposed`, `w` is `[n, k]`) or `B = W` (`w` is `[k, n]`), one panel
    /// of 16 output columns per job.
    fn pack(w: &[f32], k: usize, n: usize, transposed: bool) -> Self {
        let k_steps = k.div_ceil(TILE_K);
        let n_blocks = n.div_ceil(BLOCK) * 2;
        let mut data = vec![0u16; n_blocks * k_steps * TILE_ELEMS];
        data.par_chunks_mut(k_steps * TILE_ELEMS)
            .enumerate()
            .filter(|(block, _)| block * 16 < n)
            .for_each(|(block, panel)| pack_panel(panel, w, (k, n), block, transposed));
        PackedRight {
            k,
            n,
            k_steps,
            n_blocks,
            data,
        }
    }

    /// `B = Wᵀ` for a weight `w` of shape `[n, k]` (row-major): the product `x · Wᵀ` of a linear
    /// layer's forward pass.
    pub fn transposed(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight is not [{n}, {k}]");
        Self::pack(w, k, n, true)
    }

    /// `B = W` for a weight `w` of shape `[k, n]` (row-major): the product `g · W` of a linear
    /// layer's backward pass (`g` the gradient of its output).
    pub fn plain(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w.len(), k * n, "weight is not [{k}, {n}]");
        Self::pack(w, k, n, false)
    }

    /// The contraction length `k`.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The output columns `n`.
    pub fn n(&self) -> usize {
        self.n
    }
}

/// Packs output columns `16 · block ..` of `B` into `panel` (zeroed, `[k_steps][16][32]`):
/// vectorized with AVX-512 where the CPU has it. Attention packs a right operand per product, so
/// this runs as often as the products themselves.
fn pack_panel(panel: &mut [u16], w: &[f32], kn: (usize, usize), block: usize, transposed: bool) {
    #[cfg(target_arch = "x86_64")]
    if wide_vectors() {
        // SAFETY: the CPU has the features `pack_panel_avx512` is compiled for.
        unsafe { pack_panel_avx512(panel, w, kn, block, transposed) };
        return;
    }
    pack_panel_plain(panel, w, kn, block, transposed);
}

/// [`pack_panel`] compiled for AVX-512.
///
/// # Safety
/// The CPU must have AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn pack_panel_avx512(
    panel: &mut [u16],
    w: &[f32],
    kn: (usize, usize),
    block: usize,
    transposed: bool,
) {
    pack_panel_plain(panel, w, kn, block, transposed);
}

#[inline(always)]
fn pack_panel_plain(
    panel: &mut [u16],
    w: &[f32],
    (k, n): (usize, usize),
    block: usize,
    transposed: bool,
) {
    let first = block * 16;
    let cols = (n - first).min(16);
    if transposed {
        // `w` is [n, k]: column `c` of B is row `first + c` of w, contiguous along the
        // contraction. Rounded whole, its pairs (2r, 2r + 1) of step s go to tile row r.
        let mut column = vec![0u16; k.div_ceil(TILE_K) * TILE_K];
        for c in 0..cols {
            let row = &w[(first + c) * k..][..k];
            round_to_bf16_plain(&mut column[..k], row);
            for (index, pair) in column.chunks_exact(2).enumerate() {
                let (step, r) = (index / TILE_ROWS, index % TILE_ROWS);
                let at = step * TILE_ELEMS + r * TILE_K + c * 2;
                panel[at] = pair[0];
                panel[at + 1] = pair[1];
            }
        }
    } else {
        // `w` is [k, n]: row `kk` of w holds B's row kk, contiguous along the columns; it
        // fills every other element of tile row (kk % 32) / 2.
        for kk in 0..k {
            let (step, within) = (kk / TILE_K, kk % TILE_K);
            let at = step * TILE_ELEMS + (within / 2) * TILE_K + within % 2;
            let src = &w[kk * n + first..][..cols];
            let dst = &mut panel[at..at + 2 * cols - 1];
            for (d, s) in dst.iter_mut().step_by(2).zip(src) {
                *d = bf16_bits(*s);
            }
        }
    }
}

/// A pointer shared by the threads writing disjoint blocks of one output.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: every thread writes only its own column pair's blocks.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `a · B` for `a` of shape `[m, b.k()]` (row-major f32), in bf16 with f32 accumulation, as a
/// row-major `[m, b.n()]` f32 matrix. Panics when [`available`] is false.
pub fn matmul(a: &[f32], m: usize, b: &PackedRight) -> Vec<f32> {
    assert!(available(), "AMX bf16 is not available on this machine");
    let (k, n) = (b.k, b.n);
    assert_eq!(a.len(), m * k, "left operand is not [{m}, {k}]");
    let k_padded = b.k_steps * TILE_K;
    let m_padded = m.div_ceil(BLOCK) * BLOCK;
    let n_padded = b.n_blocks * 16;
    // The left operand in bf16, zero-padded to whole 32 × 32 blocks.
    let mut left = vec![0u16; m_padded * k_padded];
    left.par_chunks_mut(k_padded)
        .zip(a.par_chunks(k.max(1)))
        .for_each(|(dst, src)| round_to_bf16(&mut dst[..src.len()], src));
    let direct = m.is_multiple_of(BLOCK) && n.is_multiple_of(BLOCK);
    let len = if direct { m * n } else { m_padded * n_padded };
    // Every element is written by exactly one kernel call below (the blocks tile the padded
    // output), so the buffer is not zeroed first.
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let ldc = if direct { n } else { n_padded };
    let shared = SharedOut(out.spare_capacity_mut().as_mut_ptr().cast::<f32>());
    let pairs = b.n_blocks / 2;
    for group in (0..m_padded).step_by(ROW_GROUP) {
        let rows = ROW_GROUP.min(m_padded - group);
        (0..pairs).into_par_iter().for_each(|pair| {
            let panel = b.k_steps * TILE_ELEMS;
            let b0 = b.data[2 * pair * panel..].as_ptr();
            let b1 = b.data[(2 * pair + 1) * panel..].as_ptr();
            // SAFETY: `available()` was checked; every pointer stays inside `left`, `b.data` or
            // `out` (all padded to whole blocks), and this job writes only columns
            // 32·pair..32·pair+32 of `out`.
            unsafe {
                configure_tiles();
                for row in (group..group + rows).step_by(BLOCK) {
                    kernel(
                        left[row * k_padded..].as_ptr(),
                        k_padded * 2,
                        b0,
                        b1,
                        b.k_steps,
                        shared.get().add(row * ldc + pair * BLOCK),
                        ldc * 4,
                    );
                }
                release_tiles();
            }
        });
    }
    // SAFETY: the loops above wrote all `len` elements (rows 0..m_padded step 32 × column
    // pairs 0..n_blocks/2, each a 32 × 32 block of the `ldc`-wide buffer).
    unsafe { out.set_len(len) };
    if direct {
        return out;
    }
    let mut compact = vec![0f32; m * n];
    compact
        .par_chunks_mut(n.max(1))
        .zip(out.par_chunks(n_padded))
        .for_each(|(dst, src)| dst.copy_from_slice(&src[..n]));
    compact
}

/// The tile configuration: palette 1, tiles 0–7 all 16 rows × 64 bytes.
#[cfg(target_arch = "x86_64")]
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

#[cfg(target_arch = "x86_64")]
/// Loads the tile configuration on this thread.
///
/// # Safety
/// AMX must be [`available`].
unsafe fn configure_tiles() {
    let mut config = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        bytes_per_row: [0; 16],
        rows: [0; 16],
    };
    for tile in 0..8 {
        config.bytes_per_row[tile] = 64;
        config.rows[tile] = TILE_ROWS as u8;
    }
    // SAFETY: the caller checked AMX; `config` is a valid 64-byte configuration.
    unsafe {
        std::arch::asm!("ldtilecfg [{0}]", in(reg) &config, options(nostack, readonly));
    }
}

#[cfg(target_arch = "x86_64")]
/// Returns the tile state to its initial state, so the OS need not save it.
///
/// # Safety
/// AMX must be [`available`].
unsafe fn release_tiles() {
    // SAFETY: the caller checked AMX.
    unsafe {
        std::arch::asm!("tilerelease", options(nostack, nomem));
    }
}

#[cfg(target_arch = "x86_64")]
/// One 32 × 32 output block: `c[0..32, 0..32] = a[0..32, ..] · [b0 | b1]` over `k_steps` steps
/// of 32. `lda` and `ldc` are row strides in bytes; `b0`/`b1` are the packed panels of two
/// consecutive 16-column blocks.
///
/// # Safety
/// Tiles configured by [`configure_tiles`]; `a` readable for 32 rows of `k_steps · 64` bytes,
/// `b0`/`b1` for `k_steps` packed tiles, `c` writable for 32 rows of 128 bytes.
unsafe fn kernel(
    a: *const u16,
    lda: usize,
    b0: *const u16,
    b1: *const u16,
    k_steps: usize,
    c: *mut f32,
    ldc: usize,
) {
    // SAFETY: guaranteed by the caller (see above).
    unsafe {
        std::arch::asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        let a_low = a.byte_add(TILE_ROWS * lda);
        for step in 0..k_steps {
            std::arch::asm!(
                "tileloadd tmm4, [{a0} + {lda}*1]",
                "tileloadd tmm5, [{a1} + {lda}*1]",
                "tileloadd tmm6, [{b0} + {ldb}*1]",
                "tileloadd tmm7, [{b1} + {ldb}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a.add(step * TILE_K),
                a1 = in(reg) a_low.add(step * TILE_K),
                lda = in(reg) lda,
                b0 = in(reg) b0.add(step * TILE_ELEMS),
                b1 = in(reg) b1.add(step * TILE_ELEMS),
                ldb = in(reg) TILE_K * 2,
                options(nostack, readonly)
            );
        }
        let c_low = c.byte_add(TILE_ROWS * ldc);
        std::arch::asm!(
            "tilestored [{c0} + {ldc}*1], tmm0",
            "tilestored [{c1} + {ldc}*1], tmm1",
            "tilestored [{c2} + {ldc}*1], tmm2",
            "tilestored [{c3} + {ldc}*1], tmm3",
            c0 = in(reg) c,
            c1 = in(reg) c.add(16),
            c2 = in(reg) c_low,
            c3 = in(reg) c_low.add(16),
            ldc = in(reg) ldc,
            options(nostack)
        );
    }
}

/// Elsewhere there are no tiles: [`available`] is false, so these are never reached.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn configure_tiles() {
    unreachable!("AMX is x86-64 only")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn release_tiles() {}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel(
    _: *const u16,
    _: usize,
    _: *const u16,
    _: *const u16,
    _: usize,
    _: *mut f32,
    _: usize,
) {
    unreachable!("AMX is x86-64 only")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(
        a: &[f32],
        m: usize,
        k: usize,
        b: impl Fn(usize, usize) -> f32,
        n: usize,
    ) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut sum = 0f64;
                for kk in 0..k {
                    // The operands as the tile unit sees them: rounded to bf16.
                    let x = f32::from_bits((bf16_bits(a[i * k + kk]) as u32) << 16);
                    let y = f32::from_bits((bf16_bits(b(kk, j)) as u32) << 16);
                    sum += x as f64 * y as f64;
                }
                out[i * n + j] = sum as f32;
            }
        }
        out
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even one, 1.
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up.
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_bits(-2.0), 0xc000);
        assert!(f32::from_bits((bf16_bits(f32::NAN) as u32) << 16).is_nan());
    }

    /// The vectorized rounding gives the scalar one's bits, ties, NaN, infinities and
    /// subnormals included, on lengths that do and do not fill whole vectors.
    #[test]
    fn vectorized_rounding_matches_the_scalar_one() {
        let mut rng = crate::SeededNormal::new(5);
        let mut values = rng.samples(1000, 3.0);
        values.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE / 3.0,
            -0.0,
            1.0 + 1.0 / 256.0,
            1.0 + 3.0 / 256.0,
            f32::MAX,
        ]);
        for len in [values.len(), 17, 5, 0] {
            let mut got = vec![0u16; len];
            round_to_bf16(&mut got, &values[..len]);
            let want: Vec<u16> = values[..len].iter().map(|&x| bf16_bits(x)).collect();
            assert_eq!(got, want, "length {len}");
        }
    }

    /// Aligned and ragged shapes, both packings, against an f64 product of the bf16-rounded
    /// operands (the only difference left is f32 accumulation order).
    #[test]
    fn products_match_the_rounded_reference() {
        if !available() {
            eprintln!("AMX bf16 not available here: skipped");
            return;
        }
        let mut rng = crate::SeededNormal::new(3);
        for (m, k, n) in [
            (32, 64, 32),
            (64, 576, 96),
            (7, 45, 19),
            (33, 100, 50),
            (1, 32, 1),
            (5, 64, 17),
        ] {
            let a = rng.samples(m * k, 1.0);
            let w = rng.samples(n * k, 1.0);
            let got = matmul(&a, m, &PackedRight::transposed(&w, n, k));
            let want = reference(&a, m, k, |kk, j| w[j * k + kk], n);
            let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
            let got_plain = matmul(&a, m, &PackedRight::plain(&wt, k, n));
            for (g, (p, r)) in got.iter().zip(got_plain.iter().zip(&want)) {
                let tolerance = 1e-4 * (k as f32).sqrt() * (1.0 + r.abs());
                assert!((g - r).abs() < tolerance, "{m}x{k}x{n}: {g} vs {r}");
                assert!((p - r).abs() < tolerance, "{m}x{k}x{n} plain: {p} vs {r}");
            }
        }
    }
}
