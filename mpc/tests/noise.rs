//! Secure sum of clipped real vectors with distributed noise, end to end in the simulator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use sotto_dp::rng::seeded_rng;
use sotto_mpc::encoding::{Clipping, FixedPointEncoder};
use sotto_mpc::noise::{DistributedNoise, Neighbouring, Sensitivity};
use sotto_mpc::secagg::{Round, SecAggConfig, SessionId};
use sotto_mpc::sim::{SimOptions, Simulation};
use sotto_mpc::{Error, PartyId};

#[test]
fn noised_secure_sum_decodes_close_to_the_truth_and_reports_privacy() {
    let (n, t, dim) = (8, 5, 64);
    let enc = FixedPointEncoder::new(Clipping::L2 { norm: 1.0 }, 1024.0, dim).unwrap();
    let noise = DistributedNoise::new(3000.0, t).unwrap();
    noise.check_no_wrap::<u32>(n, &enc).unwrap();
    let mut rng = seeded_rng(11);
    let xs: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            (0..dim)
                .map(|j| ((i * dim + j) as f64 * 0.37).sin() * 0.1)
                .collect()
        })
        .collect();
    let inputs: Vec<Vec<u32>> = xs
        .iter()
        .map(|x| {
            let mut z = enc.encode_ring::<u32, _>(x, &mut rng).unwrap();
            noise.add_share(&mut z, &mut rng);
            z
        })
        .collect();
    let config = SecAggConfig::new(SessionId([8; 16]), n, t, dim).unwrap();
    let mut dropouts = BTreeMap::new();
    dropouts.insert(PartyId(2), Round::ShareKeys);
    dropouts.insert(PartyId(6), Round::MaskedInput);
    let report = Simulation::new(
        config,
        inputs,
        SimOptions {
            seed: 11,
            dropouts,
            ..SimOptions::default()
        },
    )
    .unwrap()
    .run();
    let out = report.result.unwrap();
    assert_eq!(out.survivors().len(), 6);
    let got = enc.decode_sum(out.sum());
    // Total noise sd (6 shares) in real units; 6 sd covers every coordinate with overwhelming
    // probability (two-sided 2e-9 per coordinate).
    let sd = noise.sigma_per_party() * 6f64.sqrt() / 1024.0;
    for (j, g) in got.iter().enumerate() {
        let truth: f64 = out.survivors().iter().map(|p| xs[p.index()][j]).sum();
        assert!(
            (g - truth).abs() < 6.0 * sd + 1e-2,
            "coordinate {j}: {g} vs {truth}"
        );
    }
    let sens = Sensitivity::of_encoder(&enc, Neighbouring::AddRemove);
    let p = noise.privacy_of(&out, sens, 0, 1e-6).unwrap();
    assert_eq!(p.contributors, 6);
    assert!(p.epsilon.is_finite() && p.epsilon > 0.0);
    // With two survivors colluding only 4 honest shares remain: below t, refused.
    assert!(matches!(
        noise.privacy_of(&out, sens, 2, 1e-6),
        Err(Error::Dp(_))
    ));
}

#[test]
fn a_configuration_that_could_wrap_is_rejected_before_any_round() {
    let enc =
        FixedPointEncoder::new(Clipping::LInf { bound: 1.0 }, (1u64 << 26) as f64, 10).unwrap();
    let noise = DistributedNoise::new(100.0, 3).unwrap();
    let e = noise.check_no_wrap::<u32>(100, &enc).unwrap_err();
    assert!(matches!(e, Error::RingOverflow { .. }));
    assert!(e.to_string().contains("scale"), "{e}");
    assert!(noise.check_no_wrap::<u64>(100, &enc).is_ok());
}
