//! Exact Bernoulli(R * exp(-gamma)) trials for rationals R, gamma >= 0, decided lazily.
//!
//! A trial compares a uniform real V in [0, 1) with p = R * exp(-gamma) and succeeds iff
//! V < p. V is drawn 64 bits at a time, most significant first, and p is evaluated only as
//! precisely as the comparison needs:
//!
//! - **Fast path** ([`exp_neg_q64`]): a 64-bit fixed-point approximation of exp(-r) for
//!   0 <= r < 2 with a proved absolute error below [`Q64_ERROR`] units of 2^-64 (table of
//!   exp(-k/256) times a degree-6 Taylor polynomial, integer arithmetic only). The caller
//!   compares the first word U of V against the approximation with a margin larger than the
//!   error; only a U within the margin (probability about 2^-57) is undecided.
//! - **Slow path** ([`bernoulli_scaled_exp_slow`]): rigorous lower and upper bounds of p on
//!   big integers ([`exp_neg_bounds`]: alternating Taylor partial sums, exponentiation by
//!   squaring for the integer part, every rounding directed outwards), compared against the
//!   first `k` bits of V; `k` doubles (drawing fresh words of V) until the comparison is
//!   decided. The answer is exactly `V < p`: the bounds always contain p, and V's first `k`
//!   bits confine V to an interval of width 2^-k.
//!
//! No floating point is used anywhere. See `docs/privacy/sampling.md`, "Fast discrete
//! Gaussian", for the error analysis.

use num_bigint::BigUint;
use rand_core::RngCore;

/// `(lo, hi)` with `lo <= 2^prec * exp(-a / b) <= hi`, for `b > 0` and `0 <= a <= b`
/// (so the argument is in [0, 1]).
///
/// Alternating Taylor series: with T_k = t^k / k! (decreasing for t <= 1), exp(-t) =
/// sum_{k<K} (-1)^k T_k + R_K with |R_K| <= T_K. Each T_k is bounded below (floor) and above
/// (ceil) by the recurrence T_k = T_{k-1} * a / (b k); the lower bound subtracts the upper
/// bounds of the odd terms, the upper bound subtracts their lower bounds, and both widen by
/// the upper bound of T_K. The sum stops at the first K whose upper bound is at most one unit.
fn exp_neg_unit_bounds(a: &BigUint, b: &BigUint, prec: u64) -> (BigUint, BigUint) {
    let one = BigUint::from(1u32) << prec;
    let (mut tl, mut th) = (one.clone(), one.clone());
    let (mut even_lo, mut even_hi) = (one.clone(), one.clone());
    let (mut odd_lo, mut odd_hi) = (BigUint::ZERO, BigUint::ZERO);
    let mut k: u64 = 1;
    let rest = loop {
        let bk = b * BigUint::from(k);
        tl = (&tl * a) / &bk;
        th = (&th * a + &bk - 1u32) / &bk;
        if th <= BigUint::from(1u32) {
            break th;
        }
        if k.is_multiple_of(2) {
            even_lo += &tl;
            even_hi += &th;
        } else {
            odd_lo += &tl;
            odd_hi += &th;
        }
        k += 1;
    };
    let minus = odd_hi + &rest;
    let lo = if even_lo > minus {
        even_lo - minus
    } else {
        BigUint::ZERO
    };
    let hi_raw = even_hi + rest;
    let hi = if hi_raw > odd_lo {
        hi_raw - odd_lo
    } else {
        BigUint::ZERO
    };
    (lo, hi.min(one))
}

/// floor(x * y / 2^prec).
fn mul_floor(x: &BigUint, y: &BigUint, prec: u64) -> BigUint {
    (x * y) >> prec
}

/// ceil(x * y / 2^prec).
fn mul_ceil(x: &BigUint, y: &BigUint, prec: u64) -> BigUint {
    let one = BigUint::from(1u32) << prec;
    (x * y + one - 1u32) >> prec
}

/// `(lo, hi)` with `lo <= 2^prec * exp(-num / den) <= hi`, for any `num >= 0`, `den > 0`.
///
/// exp(-num/den) = exp(-1)^n * exp(-f) with n = floor(num/den) and f = (num mod den) / den.
/// exp(-1)^n is bounded by exponentiation by squaring, with every product of lower bounds
/// rounded down and every product of upper bounds rounded up, so the bounds stay valid (all
/// quantities are nonnegative). Returns `(0, 2^prec)` for `den == 0` (a caller error, not
/// reachable from this crate; the bounds are still valid for any p in [0, 1]).
pub(crate) fn exp_neg_bounds(num: &BigUint, den: &BigUint, prec: u64) -> (BigUint, BigUint) {
    let one = BigUint::from(1u32) << prec;
    if *den == BigUint::ZERO {
        return (BigUint::ZERO, one);
    }
    let n = num / den;
    let f = num % den;
    let (mut lo, mut hi) = exp_neg_unit_bounds(&f, den, prec);
    if n != BigUint::ZERO {
        let unit = BigUint::from(1u32);
        let (e_lo, e_hi) = exp_neg_unit_bounds(&unit, &unit, prec);
        // Square-and-multiply over the bits of n, most significant first.
        let (mut p_lo, mut p_hi) = (one.clone(), one.clone());
        for i in (0..n.bits()).rev() {
            p_lo = mul_floor(&p_lo, &p_lo, prec);
            p_hi = mul_ceil(&p_hi, &p_hi, prec);
            if n.bit(i) {
                p_lo = mul_floor(&p_lo, &e_lo, prec);
                p_hi = mul_ceil(&p_hi, &e_hi, prec);
            }
        }
        lo = mul_floor(&lo, &p_lo, prec);
        hi = mul_ceil(&hi, &p_hi, prec);
    }
    (lo, hi)
}

/// `(lo, hi)` with `lo <= 2^prec * (r_num / r_den) * exp(-g_num / g_den) <= hi`
/// (`r_den, g_den > 0`).
pub(crate) fn scaled_exp_neg_bounds(
    r_num: &BigUint,
    r_den: &BigUint,
    g_num: &BigUint,
    g_den: &BigUint,
    prec: u64,
) -> (BigUint, BigUint) {
    let (lo, hi) = exp_neg_bounds(g_num, g_den, prec);
    if *r_den == BigUint::ZERO {
        return (BigUint::ZERO, BigUint::from(1u32) << prec);
    }
    let lo = (lo * r_num) / r_den;
    let hi = (hi * r_num + r_den - 1u32) / r_den;
    (lo, hi)
}

/// The exact slow path: Bernoulli(p) with p = (r_num / r_den) * exp(-g_num / g_den), where
/// `first` is the first 64-bit word of the uniform V (already drawn by the caller's fast path)
/// and further words come from `rng`.
///
/// Returns exactly `V < p` (p > 1 always succeeds). With V's first `k` bits known as the
/// integer `v`, V lies in [v, v + 1) / 2^k; with p in [lo, hi] / 2^prec, V < p is certain when
/// (v + 1) / 2^k <= lo / 2^prec and V >= p is certain when v / 2^k >= hi / 2^prec. Otherwise
/// `k` doubles and p is re-evaluated with `prec = k + guard` bits. The bound width is a fixed
/// number of units of 2^-prec times at most 2^guard, so each round is undecided with
/// probability O(2^-k) and the loop ends with probability one; a dyadic p is decided as soon
/// as its bounds meet. Termination is guaranteed in the mathematical sense, the expected extra
/// work is tiny (the slow path itself runs with probability about 2^-57 per trial).
pub(crate) fn bernoulli_scaled_exp_slow<R: RngCore + ?Sized>(
    rng: &mut R,
    first: u64,
    r_num: &BigUint,
    r_den: &BigUint,
    g_num: &BigUint,
    g_den: &BigUint,
) -> bool {
    let mut v = BigUint::from(first);
    let mut k: u64 = 64;
    let guard = 64 + r_num.bits().max(r_den.bits());
    loop {
        let prec = k + guard;
        let (lo, hi) = scaled_exp_neg_bounds(r_num, r_den, g_num, g_den, prec);
        let shift = prec - k;
        if (&v + 1u32) << shift <= lo {
            return true;
        }
        if &v << shift >= hi {
            return false;
        }
        // Undecided: learn the next k bits of V.
        for _ in 0..k / 64 {
            v = (v << 64u32) | BigUint::from(rng.next_u64());
        }
        k *= 2;
    }
}

/// Number of entries of [`EXP_TABLE`]: exp(-k/256) for 0 <= k < 512 covers [0, 2).
pub(crate) const EXP_TABLE_LEN: usize = 512;

/// An upper bound on `|exp_neg_q64(r) - 2^64 exp(-r / 2^64)|`, in units of 2^-64 (the proof
/// gives 6.6; see [`exp_neg_q64`]).
pub(crate) const Q64_ERROR: u64 = 7;

/// Evaluates 2^64 * exp(-r / 2^64) for `r < 2^65` (an argument in [0, 2)) with absolute
/// error below [`Q64_ERROR`] = 7 units; `None` for a larger `r`.
///
/// exp(-r) = exp(-k / 256) * exp(-x) with k = floor(256 r) and x = r - k / 256 < 2^-8. The
/// first factor is `EXP_TABLE[k]` = floor(2^64 exp(-k/256)) (error in [0, 1]); the second is
/// the Taylor polynomial of degree 6 (truncation error below x^7 / 7! < 0.06 units), whose
/// powers x^n and terms x^n / n! are computed with floor rounding (each power within 1.01
/// units, each term within 1.51 units), so the polynomial is within (-4.53, +3.08) units of
/// 2^64 exp(-x). The final product, rounded down, is within (-6.54, +3.09) units.
#[inline]
pub(crate) fn exp_neg_q64(r: u128) -> Option<u64> {
    let k = usize::try_from(r >> 56).ok()?;
    let t = *EXP_TABLE.get(k)?;
    let f = (r as u64) & ((1u64 << 56) - 1);
    let mulhi = |a: u64, b: u64| ((u128::from(a) * u128::from(b)) >> 64) as u64;
    let f2 = mulhi(f, f);
    let f3 = mulhi(f2, f);
    let f4 = mulhi(f3, f);
    let f5 = mulhi(f4, f);
    let f6 = mulhi(f5, f);
    // 2^64 - x + x^2/2 - x^3/6 + x^4/24 - x^5/120 + x^6/720 (positive part first: no underflow,
    // the result is at least 2^64 exp(-2^-8) - 5 > 0).
    let plus = (1u128 << 64) + u128::from(f2 / 2) + u128::from(f4 / 24) + u128::from(f6 / 720);
    let minus = u128::from(f) + u128::from(f3 / 6) + u128::from(f5 / 120);
    let poly = u64::try_from(plus - minus).unwrap_or(u64::MAX);
    Some(mulhi(t, poly))
}

/// floor(2^64 exp(-k / 256)) for 0 <= k < 512 (k = 0 stored as 2^64 - 1).
///
/// Generated with Python's `decimal` at 80 digits:
/// `int((Decimal(-k) / 256).exp() * 2**64)`; the unit test `exp_table_matches_big_int_bounds`
/// checks every entry against the big-integer bounds of [`exp_neg_bounds`].
#[rustfmt::skip]
pub(crate) const EXP_TABLE: [u64; EXP_TABLE_LEN] = [
    0xffffffffffffffff, 0xff007fd55ffdde38, 0xfe01feab551127cb, 0xfd047b835dfa9c5d,
    0xfc07f55ff77d2493, 0xfb0c6b449b604ec2, 0xfa11dc35bf73c89e, 0xf9184738d493d4fa,
    0xf81fab5445aebc8a, 0xf728078f76cb38c0, 0xf6315af2c40fd7bd, 0xf53ba48780cb5863,
    0xf446e357f67dfd8e, 0xf353166f63e3d781, 0xf2603cd9fc00028e, 0xf16e55a4e528da04,
    0xf07d5fde38151e72, 0xef8d5a94feea0e48, 0xee9e44d9344a6fea, 0xedb01dbbc2668c3c,
    0xecc2e44e820d18c3, 0xebd697a439bd105c, 0xeaeb36d09cb879a6, 0xea00c0e84a181a37,
    0xe9173500cbe0159a, 0xe82e923096157743, 0xe746d78f05d4a680, 0xe66004346068c381,
    0xe57a1739d263ec94, 0xe4950fb96eb86a9d, 0xe3b0ecce2dd2c3fc, 0xe2cdad93ecb4b4e0,
    0xe1eb51276c110c3c, 0xe109d6a64f686c62, 0xe0293d2f1c26ee74, 0xdf4983e138c2a7bb,
    0xde6aa9dcebdb100b, 0xdd8cae435b594851, 0xdcaf90368b91406a, 0xdbd34ed95e63bb60,
    0xdaf7e94f9261313d, 0xda1d5ebdc1ed8d88, 0xd943ae496264c997, 0xd86ad718c34061d6,
    0xd792d8530d3da531, 0xd6bbb1204184ddbf, 0xd5e560a938d151d8, 0xd50fe617a29a1cbe,
    0xd43b4096043bde02, 0xd3676f4fb8233ed1, 0xd2947170ecf84c4a, 0xd1c24626a4caa61a,
    0xd0f0ec9eb43e8078, 0xd0206407c1ba78b7, 0xcf50ab9144963b9a, 0xce81c26b8449fc9d,
    0xcdb3a7c7979ebd5c, 0xcce65ad763df6447, 0xcc19dacd9c0aa1df, 0xcb4e26ddc005a3a5,
    0xca833e3c1bcf93e9, 0xc9b9201dc6b5e5bb, 0xc8efcbb8a2896c2b, 0xc82740435ad43c03,
    0xc75f7cf564105743, 0xc6988106fadf218a, 0xc5d24bb123419caa, 0xc50cdc2da7d16c91,
    0xc44831b718faa1d9, 0xc3844b88cc364a22, 0xc2c128dedb45c577, 0xc1fec8f6236ee004,
    0xc13d2b0c44b8af4a, 0xc07c4e5fa1293212, 0xbfbc322f5c03b26a, 0xbefcd5bb5907e8d2,
    0xbe3e38443bb1dfef, 0xbd80590b667a97f5, 0xbcc33752fa196913, 0xbc06d25dd4c62417,
    0xbb4b296f917bf09a, 0xba903bcc873ce7e7, 0xb9d608b9c8566bf1, 0xb91c8f7d21a63990,
    0xb863cf5d19e0354e, 0xb7abc7a0f0d4f20c, 0xb6f477909eb8f0c5, 0xb63dde74d36c98b0,
    0xb587fb96f5c4e712, 0xb4d2ce4122d4d607, 0xb41e55be2d377982, 0xb36a91599c5ad1d9,
    0xb2b7805fabcb5327, 0xb205221d4a8020c8, 0xb15375e01a27fc3f, 0xb0a27af66e76e6da,
    0xaff230af4c747553, 0xaf42965a69cad4cd, 0xae93ab482c16806a, 0xade56ec9a836a6e1,
    0xad37e030a19e3f45, 0xac8afecf89a5cc71, 0xabdec9f97eddce4f, 0xab3341024c61e05a,
    0xaa88633e692c84ab, 0xa9de3002f76b9ae7, 0xa934a6a5c3d5825e, 0xa88bc67d44fee6b0,
    0xa7e38ee09ab13658, 0xa73bff278d41c266, 0xa69516aa8ce986c6, 0xa5eed4c2b11d9a6a,
    0xa54938c9b7e846b1, 0xa4a4421a0542c566, 0xa3fff00ea26fa4ab, 0xa35c42033d55d02b,
    0xa2b9375427dc3ef5, 0xa216cf5e57464557, 0xa175097f63908a0e, 0xa0d3e51586ce9e3f,
    0xa033617f9c893772, 0x9f937e1d211d0b16, 0x9ef43a4e311a4acb, 0x9e55957388a4c0e6,
    0x9db78eee82d48c8c, 0x9d1a262119177cb5, 0x9c7d5a6de2930992, 0x9be12b381386eba5,
    0x9b4597e37cb04ff3, 0x9aaa9fd48aada8b3, 0x9a104270456319e0, 0x99767f1c4f5f8112,
    0x98dd553ee54217fd, 0x9844c43edd20b107, 0x97accb83a5ee8d4e, 0x97156a7546e3cb8f,
    0x967ea07c5ee56f55, 0x95e86d0223edffca, 0x9552cf706276bdae, 0x94bdc7317ce16fbb,
    0x942953b06ae2c503, 0x93957458b8ed4c91, 0x93022896879d01d1, 0x926f6fd68b236d23,
    0x91dd49860ab457fe, 0x914bb512dff31415, 0x90bab1eb766054f3, 0x902a3f7ecac89b6b,
    0x8f9a5d3c6ab3325d, 0x8f0b0a9473d1bc2e, 0x8e7c46f79370506d, 0x8dee11d705e62917,
    0x8d606aa49606dedd, 0x8cd350d29c9433f2, 0x8c46c3d3ffb06cbb, 0x8bbac31c325135ea,
    0x8b2f4e1f33b31766, 0x8aa464518ecd737a, 0x8a1a052859c711c5, 0x89903019356b3552,
    0x8906e49a4c9f3d59, 0x887e222253d8d018, 0x87f5e82888948f3e, 0x876e3624b0cd555d,
    0x86e70b8f1a73fbd8, 0x866067e09ae7a8c7, 0x85da4a928e6ea451, 0x8554b31ed7afb4df,
    0x84cfa0ffdf2c01be, 0x844b13b092b97b92, 0x83c70aac64fdca22, 0x8343856f4ce9bef2,
    0x82c08375c5354c26, 0x823e043ccbdbff37, 0x81bc0741e199fedb, 0x813a8c0309698bbb,
    0x80b991fec8010361, 0x803918b4235164e2, 0x7fb91fa2a20556cb, 0x7f39a64a4b00adb6,
    0x7ebaac2ba4e0732d, 0x7e3c30c7b57b6c38, 0x7dbe33a001631f28, 0x7d40b4368b655823,
    0x7cc3b20dd40e2be0, 0x7c472ca8d92a7830, 0x7bcb238b154ae1bc, 0x7b4f96387f474e8b,
    0x7ad4843589c2dcd4, 0x7a59ed0722b05590, 0x79dfd032b2d71a6a, 0x79662d3e1d588e76,
    0x78ed03afbf35f94b, 0x7874530e6ed6e3fb, 0x77fc1ae17b8fef6e, 0x77845ab0ad2a23ae,
    0x770d1204436ab7a7, 0x76964064f59b50e0, 0x761fe55bf212babb, 0x75aa0072ddbe14c5,
    0x75349133d3aa7794, 0x74bf9729648f0fd1, 0x744b11de9657aedd, 0x73d700dee3afd0bc,
    0x736363b63b8e16b0, 0x72f039f100c03628, 0x727d831c09775b86, 0x720b3ec49ed50045,
    0x71996c787c783410, 0x71280bc5d00b5858, 0x70b71c3b38d24df7, 0x70469d67c7391469,
    0x6fd68edafc62da2c, 0x6f66f024c9b97dde, 0x6ef7c0d5907d7f9c, 0x6e89007e21566238,
    0x6e1aaeafbbe37bd9, 0x6daccafc0e4d3590, 0x6d3f54f534d6b977, 0x6cd24c2db9700eec,
    0x6c65b0389348a478, 0x6bf980a9266246f3, 0x6b8dbd1343248581, 0x6b22650b25f081ed,
    0x6ab7782576b52d00, 0x6a4cf5f74883ee6d, 0x69e2de161925b7d4, 0x69793017d0b08282,
    0x690feb92c11d3784, 0x68a7101da5de018f, 0x683e9d4fa3750870, 0x67d692c0470b9581,
    0x676ef0078609a0cd, 0x6707b4bdbdadc66c, 0x66a0e07bb2a5a3be, 0x663a72da90a69c08,
    0x65d46b73ea070429, 0x656ec9e1b757b4e3, 0x65098dbe56fe0365, 0x64a4b6a48cce1fa7,
    0x6440442f81a5d838, 0x63dc35fac307c30f, 0x63788ba242b6cb09, 0x631544c2565221a4,
    0x62b260f7b6f19493, 0x624fdfdf80c246cd, 0x61edc11732a3ccb8, 0x618c043cadc5aaf9,
    0x612aa8ee354537a0, 0x60c9aeca6dcbdd3a, 0x606915705d2dbf75, 0x6008dc7f6a08c0ed,
    0x5fa903975b63e9bb, 0x5f498a58584f2e7f, 0x5eea7062e783975d, 0x5e8bb557ef03c6b4,
    0x5e2d58d8b3bcdf1a, 0x5dcf5a86d927c83d, 0x5d71ba0460ead255, 0x5d1476f3aa7bb7c6,
    0x5cb790f772c1fc89, 0x5c5b07b2d3b9ab0f, 0x5bfedac944166e34, 0x5ba309de96e707ed,
    0x5b479496fb39244c, 0x5aec7a96fbbd8886, 0x5a91bb837e6c9da0, 0x5a375701c42b565d,
    0x59dd4cb76870701b, 0x59839c4a60ea0e44, 0x592a4560fd23aff1, 0x58d147a1e62c7f75,
    0x5878a2b41e3dfb5c, 0x5820563f0062f8a4, 0x57c861ea401efdbe, 0x5770c55de915f609,
    0x571980425eb43d70, 0x56c292405bd703cf, 0x566bfb00f27507c7, 0x5615ba2d8b47a8b3,
    0x55bfcf6fe5744f51, 0x556a3a7216362cea, 0x5514fade88885080, 0x54c0105ffcd011c2,
    0x546b7aa18887d16e, 0x5417394e95ea0ec1, 0x53c34c12e39cd1ab, 0x536fb29a845d696e,
    0x531c6c91deac7f58, 0x52c979a5ac7a7d35, 0x5276d982fad4473f, 0x52248bd729904924,
    0x51d2904feafbd5d0, 0x5180e69b4388d9b9, 0x512f8e67897bdf47, 0x50de8763649a6513,
    0x508dd13dcdd985a5, 0x503d6ba60f0cf066, 0x4fed564bc2963364, 0x4f9d90ded31455b8,
    0x4f4e1b0f7b13c216, 0x4efef48e44be8157, 0x4eb01d0c098cc49b, 0x4e619439f1f5beb9,
    0x4e1359c97520ccb5, 0x4dc56d6c5896ecd9, 0x4d77ced4aff48440, 0x4d2a7db4dc9b7264,
    0x4cdd79bf8d65727e, 0x4c90c2a7be56ca5a, 0x4c445820b8514652, 0x4bf839de10c78228,
    0x4bac6793a9707e7a, 0x4b60e0f5affb8269, 0x4b15a5b89dc44948, 0x4acab59137877bf0,
    0x4a8010348d177576, 0x4a35b557f91152f8, 0x49eba4b120924e32, 0x49a1ddf5f2ed6296,
    0x495860dca9613c9c, 0x490f2d1bc6ce72f4, 0x48c6426a176e0966, 0x487da07eb0883d03,
    0x48354710f02b9966, 0x47ed35d87ce456bf, 0x47a56c8d45740057, 0x475deae78089634c,
    0x4716b09fac78c53b, 0x46cfbd6e8ef4628d, 0x4689110d34c53425, 0x4642ab34f183fc20,
    0x45fc8b9f5f52996a, 0x45b6b2065e95a1dc, 0x45711e2415ae4295, 0x452bcfb2f0b4665c,
    0x44e6c66da13121ac, 0x44a2020f1dd9643d, 0x445d8252a248efaf, 0x441946f3aebd9321,
    0x43d54fae07d2ab6b, 0x43919c3db63ce7b1, 0x434e2c5f06865214, 0x430affce88ca9c35,
    0x42c816491073af4c, 0x42856f8bb3f67f8c, 0x42430b53cc902293, 0x4200e95ef60328a0,
    0x41bf096b0e553852, 0x417d6b36358ceca6, 0x413c0e7ecd6ff4fb, 0x40faf303794176cd,
    0x40ba18831d80b0fa, 0x40797ebcdfa7e036, 0x4039257025eb6482, 0x3ff90c5c96f9275c,
    0x3fb9334219b84263, 0x3f7999e0d508e641, 0x3f3a3ff92f84817c, 0x3efb254bcf3e2713,
    0x3ebc499999833486, 0x3e7daca3b29c3720, 0x3e3f4e2b7d8e103b, 0x3e012df29bdb583f,
    0x3dc34bbaed46001f, 0x3d85a7468f913115, 0x3d484057de436a63, 0x3d0b16b17268dcd3,
    0x3cce2a16225603bb, 0x3c917a49016a7b50, 0x3c55070d5fd41402, 0x3c18d026ca52229e,
    0x3bdcd55909f90d0f, 0x3ba1166823f6136c, 0x3b6593185953551c, 0x3b2a4b2e26bc11e1,
    0x3aef3e6e4441267b, 0x3ab46c9da51dc4b4, 0x3a79d581777c6697, 0x3a3f78df243bfc95,
    0x3a05567c4eb55660, 0x39cb6e1ed480c63f, 0x3991bf8ccd3bfea0, 0x39584a8c8a5029b2,
    0x391f0ee496b83ac8, 0x38e60c5bb6c77953, 0x38ad42b8e7f0452a, 0x3874b1c3608b13fe,
    0x383c59428f9da7ab, 0x380438fe1ca27d39, 0x37cc50bde7507451, 0x3794a04a0762aef1,
    0x375d276acc60a921, 0x3725e5e8bd668878, 0x36eedb8c98eda32f, 0x36b8081f54953e9d,
    0x36816b6a1ceb84c9, 0x364b05365536b0fb, 0x3614d54d973e72f9, 0x35dedb79b31588ce,
    0x35a91784aee38ed3, 0x35738938c6af05d8, 0x353e30606c278f21, 0x35090cc646705e15,
    0x34d41e3531eadf5a, 0x349f647840019534, 0x346adf5ab6f328e9, 0x34368ea8119db0ff,
    0x3402722bff4a2c10, 0x33ce89b263783014, 0x339ad50755a9cdd9, 0x336753f7212fa883,
    0x3334064e44f540d5, 0x3300ebd9734d741d, 0x32ce046591bf2e7e, 0x329b4fbfb8d25076,
    0x3268cdb533dcc75f, 0x32367e1380cfd8c1, 0x320460a85005a044, 0x31d27541840ebffe,
    0x31a0bbad31804305, 0x316f33b99ec1b1fe, 0x313ddd3543db5981, 0x310cb7eeca44c21b,
    0x30dbc3b50cb359c7, 0x30ab005716e94e98, 0x307a6da425849a7c, 0x304a0b6ba5ce3fd5,
    0x3019d97d3589b6bc, 0x2fe9d7a8a2c48ac5, 0x2fba05bdeba62902, 0x2f8a638d3e3fde2d,
    0x2f5af0e6f85d04af, 0x2f2bad9ba753626f, 0x2efc997c07d3b61a, 0x2ecdb45905ba73db,
    0x2e9efe03bbe0b129, 0x2e70764d73ed3fa5, 0x2e421d07a625f6b5, 0x2e13f203f9412bcc,
    0x2de5f5144237591b, 0x2db8260a8414f284, 0x2d8a84b8efcc68a3, 0x2d5d10f1e40859bf,
    0x2d2fca87ecfdf06c, 0x2d02b14dc43f6fc3, 0x2cd5c516508eecea, 0x2ca905b4a5b135d8,
    0x2c7c72fc0440e510, 0x2c500cbfd981a23d, 0x2c23d2d3bf338f71, 0x2bf7c50b7b66e2df,
    0x2bcbe33b004facea, 0x2ba02d366c19ca53, 0x2b74a2d208bd0264, 0x2b4943e24bd150e2,
    0x2b1e103bd6635ba3, 0x2af307b374c91396, 0x2ac82a1e1e768115, 0x2a9d7750f5d2bb56,
    0x2a72ef21480d0acf, 0x2a4891648cf23660, 0x2a1e5df066c1fb1f, 0x29f4549aa204ae93,
    0x29ca753935610b35, 0x29a0bfa24172271c, 0x297733ac109d948a, 0x294dd12d16e9ac57,
    0x292497fbf1d401ef, 0x28fb87ef682800cd, 0x28d2a0de69d5b344, 0x28a9e2a00fc8b26b,
    0x28814d0b9bbf3f05, 0x2858dff87821833c, 0x28309b3e37d8fd06, 0x28087eb49628110a,
    0x27e08a337681c5e3, 0x27b8bd92e461a788, 0x279118ab1323d2cd, 0x27699b545ddd28b5,
    0x274245674733a988, 0x271b16bc7936f774, 0x26f40f2cc5390097, 0x26cd2e9123a6d053,
    0x26a674c2b3e187b2, 0x267fe19abc177cca, 0x265974f2a91d80e1, 0x26332ea40e484d45,
    0x260d0e88a546169a, 0x25e7147a4df84687, 0x25c140530e4d5b91, 0x259b91ed121aef0a,
    0x25760922aaf7e0e2, 0x2550a5ce5016a93a, 0x252b67ca9e1fcf94, 0x25064ef2570c8779,
    0x24e15b206201726f, 0x24bc8c2fcb298719, 0x2497e1fbc3911d5f, 0x24735c5fa1011f7b,
    0x244efb36ddda5fba, 0x242abe5d18f112dd, 0x2406a5ae15686ee7, 0x23e2b105ba8e6e42,
    0x23bee04013b7b705, 0x239b3339501ba649, 0x2377a9cdc2b07f5d, 0x235443d9e207beb6,
    0x2331013a482a9082, 0x230de1cbb2766aac, 0x22eae56b0179ca36, 0x22c80bf538d113c6,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded_rng;

    fn big(x: u128) -> BigUint {
        BigUint::from(x)
    }

    fn hex(s: &str) -> BigUint {
        BigUint::parse_bytes(s.as_bytes(), 16).unwrap()
    }

    /// floor(2^256 exp(-a/b)), from Python's `decimal` at 120 digits:
    /// `hex(int((Decimal(-a) / b).exp() * 2**256))`.
    const REFERENCE: [(u128, u128, &str); 7] = [
        (
            1,
            1,
            "5e2d58d8b3bcdf1abadec7829054f90dda9805aab56c77333024b9d0a507daed",
        ),
        (
            1,
            2,
            "9b4597e37cb04ff3d675a35530cdd767e347bf8ad0e80abbce4ae95861014318",
        ),
        (
            3,
            7,
            "a6c4b5c76ed590fa515b4c45aec303f48a4e6ed9ba579db051ab796e1b2f187c",
        ),
        (
            2,
            1,
            "22a555477f03973fb6edd5c25a052ae3f0dd961da28ac9959e1329cdbcb21c09",
        ),
        (81, 2, "2f8864333beab3818835ec270e354852242c2a414e9898cf78"),
        (401, 4, "a56698f0b3f5d6e19592fe9fd39c"),
        (
            0,
            1,
            "10000000000000000000000000000000000000000000000000000000000000000",
        ),
    ];

    #[test]
    fn big_int_bounds_bracket_reference_values() {
        for (a, b, h) in REFERENCE {
            let reference = hex(h);
            for prec in [256u64, 300] {
                let (lo, hi) = exp_neg_bounds(&big(a), &big(b), prec);
                // reference = floor(2^256 e), so 2^256 e lies in [reference, reference + 1).
                let scale = prec - 256;
                assert!(
                    lo <= (&reference + 1u32) << scale,
                    "{a}/{b}: lower bound too high"
                );
                assert!(hi >= &reference << scale, "{a}/{b}: upper bound too low");
                // And the bounds are tight: within 2^12 units.
                assert!(&hi - &lo < big(1 << 12), "{a}/{b}: width {}", &hi - &lo);
            }
        }
    }

    #[test]
    fn big_int_bounds_of_products_and_ratios() {
        // (3/4) exp(-1/5) against exp(-1/5) alone, and R = 1 with gamma = 0 is exactly 1.
        let (lo, hi) = scaled_exp_neg_bounds(&big(3), &big(4), &big(1), &big(5), 128);
        let (elo, ehi) = exp_neg_bounds(&big(1), &big(5), 128);
        assert!(lo <= &elo * 3u32 / 4u32 && hi >= (&ehi * 3u32) / 4u32);
        let (lo, hi) = scaled_exp_neg_bounds(&big(1), &big(1), &big(0), &big(1), 64);
        assert_eq!((lo, hi), (big(1 << 64), big(1 << 64)));
        // A huge exponent: the upper bound stays positive and tiny, the lower bound is 0.
        let (lo, hi) = exp_neg_bounds(&(big(1) << 80u32), &big(3), 128);
        assert_eq!(lo, BigUint::ZERO);
        assert!(hi <= big(1));
    }

    #[test]
    fn exp_table_matches_big_int_bounds() {
        assert_eq!(EXP_TABLE[0], u64::MAX);
        for (k, &t) in EXP_TABLE.iter().enumerate().skip(1) {
            let (lo, hi) = exp_neg_bounds(&big(k as u128), &big(256), 128);
            // t = floor(2^64 e): t 2^64 <= lo (so t <= e) and (t + 1) 2^64 > hi (so t + 1 > e).
            assert!(big(u128::from(t)) << 64u32 <= lo, "entry {k} too high");
            assert!(big(u128::from(t) + 1) << 64u32 > hi, "entry {k} too low");
        }
    }

    /// |exp_neg_q64(r) - 2^64 exp(-r / 2^64)| < Q64_ERROR on table boundaries and on 20,000
    /// random arguments in [0, 2).
    #[test]
    fn fixed_point_exp_is_within_its_error_bound() {
        let mut rng = seeded_rng(11);
        let mut args: Vec<u128> = vec![0, 1, (1 << 56) - 1, 1 << 56, (1 << 65) - 1];
        for k in [1u128, 2, 255, 256, 257, 510, 511] {
            args.extend([(k << 56) - 1, k << 56, (k << 56) + 1]);
        }
        for _ in 0..20_000 {
            args.push((u128::from(rng.next_u64()) << 1) | u128::from(rng.next_u64() & 1));
        }
        let mut worst = 0i128;
        for r in args {
            let e = exp_neg_q64(r).unwrap();
            // 2^128 exp(-r / 2^64) = 2^128 exp(-r / 2^64): bounds at 128 bits.
            let (lo, hi) = exp_neg_bounds(&big(r), &big(1 << 64), 128);
            let lo = i128::try_from(lo >> 64u32).unwrap();
            let hi = i128::try_from((hi >> 64u32) + 1u32).unwrap();
            let e = i128::from(e);
            let err = (e - hi).max(lo - e).max(0);
            worst = worst.max(err);
            assert!(err < i128::from(Q64_ERROR), "r = {r}: {e} vs [{lo}, {hi}]");
        }
        assert!(exp_neg_q64(1 << 65).is_none());
        eprintln!("worst fixed-point exp error: {worst} units (bound {Q64_ERROR})");
    }

    fn slow_frequency(r: (u128, u128), g: (u128, u128), p: f64, seed: u64) {
        let mut rng = seeded_rng(seed);
        let n = 20_000;
        let hits = (0..n)
            .filter(|_| {
                let first = rng.next_u64();
                bernoulli_scaled_exp_slow(
                    &mut rng,
                    first,
                    &big(r.0),
                    &big(r.1),
                    &big(g.0),
                    &big(g.1),
                )
            })
            .count() as f64;
        if p == 1.0 || p == 0.0 {
            assert_eq!(hits, p * n as f64);
            return;
        }
        let se = (p * (1.0 - p) / n as f64).sqrt();
        let z = (hits / n as f64 - p) / se;
        // Two-sided level about 6e-7 per case.
        assert!(z.abs() < 5.0, "R = {r:?}, gamma = {g:?}: z = {z}");
    }

    #[test]
    fn forced_slow_path_has_the_right_frequency() {
        slow_frequency((1, 1), (1, 1), (-1f64).exp(), 1);
        slow_frequency((1, 2), (0, 1), 0.5, 2);
        slow_frequency((1, 1), (0, 1), 1.0, 3);
        slow_frequency((3, 4), (1, 5), 0.75 * (-0.2f64).exp(), 4);
        // A large R against a large exponent: 2^55 exp(-40) ~ 0.153.
        slow_frequency((1 << 55, 1), (40, 1), 2f64.powi(55) * (-40f64).exp(), 5);
    }

    /// The first word equal to floor(2^64 p): the outcome depends on the later words, and
    /// P(V < p | first word) = frac(2^64 p) (here for p = exp(-1)).
    #[test]
    fn slow_path_resolves_a_straddling_first_word() {
        let (lo, _) = exp_neg_bounds(&big(1), &big(1), 192);
        let first = u64::try_from(&lo >> 128u32).unwrap();
        let frac_bits = u64::try_from((&lo >> 64u32) & big(u64::MAX as u128)).unwrap();
        let frac = frac_bits as f64 / 2f64.powi(64);
        let mut rng = seeded_rng(6);
        let n = 20_000;
        let hits = (0..n)
            .filter(|_| {
                bernoulli_scaled_exp_slow(&mut rng, first, &big(1), &big(1), &big(1), &big(1))
            })
            .count() as f64;
        let se = (frac * (1.0 - frac) / n as f64).sqrt();
        let z = (hits / n as f64 - frac) / se;
        assert!(z.abs() < 5.0, "frac = {frac}, observed {}", hits / n as f64);
    }

    /// A dyadic p is decided from the first word alone, also at equality.
    #[test]
    fn slow_path_decides_dyadic_probabilities_exactly() {
        let mut rng = seeded_rng(7);
        let half = |rng: &mut _, first| {
            bernoulli_scaled_exp_slow(rng, first, &big(1), &big(2), &big(0), &big(1))
        };
        assert!(!half(&mut rng, 1 << 63)); // V >= 1/2
        assert!(half(&mut rng, (1 << 63) - 1)); // V < 1/2
        assert!(half(&mut rng, 0));
        assert!(!half(&mut rng, u64::MAX));
        // p = 1: always, even for the largest first word; p > 1 likewise.
        assert!(bernoulli_scaled_exp_slow(
            &mut rng,
            u64::MAX,
            &big(1),
            &big(1),
            &big(0),
            &big(1)
        ));
        assert!(bernoulli_scaled_exp_slow(
            &mut rng,
            u64::MAX,
            &big(3),
            &big(1),
            &big(0),
            &big(1)
        ));
    }
}
