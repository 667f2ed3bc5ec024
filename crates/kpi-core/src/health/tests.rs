use proptest::prelude::*;

use super::*;

fn values(given: &[(Signal, f64)]) -> SignalValues {
    let mut values = [None; Signal::ALL.len()];
    for &(signal, value) in given {
        values[signal.index()] = Some(value);
    }
    values
}

fn threshold(at_least: f64, score: f64) -> Threshold {
    Threshold { at_least, score }
}

#[test]
fn a_linear_mapping_is_0_and_100_at_its_ends_and_clamped_beyond() {
    let up = Mapping::linear(2.0, 4.0).unwrap();
    assert_eq!(up.score(2.0), 0.0);
    assert_eq!(up.score(3.0), 50.0);
    assert_eq!(up.score(4.0), 100.0);
    assert_eq!(up.score(-1e300), 0.0);
    assert_eq!(up.score(1e300), 100.0);
    let down = Mapping::linear(10.0, 0.0).unwrap();
    assert_eq!(down.score(0.0), 100.0);
    assert_eq!(down.score(2.5), 75.0);
    assert_eq!(down.score(12.0), 0.0);
}

#[test]
fn thresholds_score_the_last_step_reached_and_the_first_below_it() {
    let steps = Mapping::thresholds(vec![
        threshold(0.0, 0.0),
        threshold(7.0, 60.0),
        threshold(9.0, 100.0),
    ])
    .unwrap();
    assert_eq!(steps.score(-5.0), 0.0);
    assert_eq!(steps.score(0.0), 0.0);
    assert_eq!(steps.score(6.999), 0.0);
    assert_eq!(steps.score(7.0), 60.0);
    assert_eq!(steps.score(8.5), 60.0);
    assert_eq!(steps.score(9.0), 100.0);
    assert_eq!(steps.score(f64::MAX), 100.0);
}

#[test]
fn invalid_mappings_weights_and_bands_are_refused() {
    assert_eq!(Mapping::linear(1.0, 1.0), Err(ModelError::EmptyRange));
    assert_eq!(Mapping::linear(f64::NAN, 1.0), Err(ModelError::NotFinite));
    assert_eq!(
        Mapping::linear(0.0, f64::INFINITY),
        Err(ModelError::NotFinite)
    );
    assert_eq!(Mapping::thresholds(vec![]), Err(ModelError::ThresholdCount));
    let many = (0..=MAX_THRESHOLDS)
        .map(|i| threshold(i as f64, 50.0))
        .collect();
    assert_eq!(Mapping::thresholds(many), Err(ModelError::ThresholdCount));
    assert_eq!(
        Mapping::thresholds(vec![threshold(1.0, 0.0), threshold(1.0, 50.0)]),
        Err(ModelError::ThresholdOrder)
    );
    assert_eq!(
        Mapping::thresholds(vec![threshold(2.0, 0.0), threshold(1.0, 50.0)]),
        Err(ModelError::ThresholdOrder)
    );
    assert_eq!(
        Mapping::thresholds(vec![threshold(0.0, 100.5)]),
        Err(ModelError::ScoreRange)
    );
    assert_eq!(
        Mapping::thresholds(vec![threshold(0.0, -0.1)]),
        Err(ModelError::ScoreRange)
    );
    assert_eq!(
        Mapping::thresholds(vec![threshold(f64::NEG_INFINITY, 0.0)]),
        Err(ModelError::NotFinite)
    );
    let mapping = Mapping::linear(0.0, 1.0).unwrap();
    assert_eq!(
        SignalRule::new(mapping.clone(), -1.0),
        Err(ModelError::WeightRange)
    );
    assert_eq!(
        SignalRule::new(mapping.clone(), MAX_WEIGHT * 1.001),
        Err(ModelError::WeightRange)
    );
    assert_eq!(
        SignalRule::new(mapping.clone(), f64::NAN),
        Err(ModelError::NotFinite)
    );
    assert_eq!(Bands::new(40.0, 40.0), Err(ModelError::BandOrder));
    assert_eq!(Bands::new(70.0, -1.0), Err(ModelError::BandOrder));
    assert_eq!(Bands::new(100.1, 40.0), Err(ModelError::BandOrder));
    assert_eq!(Bands::new(f64::NAN, 40.0), Err(ModelError::NotFinite));
    let weightless = std::array::from_fn(|_| SignalRule::new(mapping.clone(), 0.0).unwrap());
    assert_eq!(
        HealthModel::new(weightless, Bands::default()),
        Err(ModelError::NoWeight)
    );
}

#[test]
fn the_default_model_passes_its_own_checks() {
    let model = HealthModel::default();
    let rules = Signal::ALL.map(|signal| {
        let rule = model.rule(signal);
        let mapping = match &rule.mapping {
            Mapping::Linear { zero, full } => Mapping::linear(*zero, *full),
            Mapping::Thresholds(steps) => Mapping::thresholds(steps.clone()),
        };
        SignalRule::new(mapping.unwrap(), rule.weight).unwrap()
    });
    assert_eq!(
        HealthModel::new(rules, Bands::new(70.0, 40.0).unwrap()).unwrap(),
        model
    );
}

#[test]
fn a_missing_signal_leaves_the_mean_instead_of_counting_as_zero() {
    let model = HealthModel::default();
    let promoter = model.score(&values(&[(Signal::Nps, 10.0)])).unwrap();
    assert_eq!(promoter.score, 100.0);
    assert_eq!(promoter.band, Band::Healthy);
    assert_eq!(promoter.signals.len(), 1);
    // A detractor (0, weight 3) who pays without failures (100, weight 3) and has two open
    // tickets (60, weight 1): (0 * 3 + 100 * 3 + 60 * 1) / 7.
    let mixed = model
        .score(&values(&[
            (Signal::Nps, 3.0),
            (Signal::PaymentFailures, 0.0),
            (Signal::TicketsOpen, 2.0),
        ]))
        .unwrap();
    assert!((mixed.score - 360.0 / 7.0).abs() < 1e-12, "{}", mixed.score);
    assert_eq!(mixed.band, Band::Neutral);
    let sum: f64 = mixed.signals.iter().map(|s| s.contribution).sum();
    assert!((sum - mixed.score).abs() < 1e-12);
    assert_eq!(model.score(&values(&[])), None);
    // A value that is not a number is no data, not a score.
    assert_eq!(model.score(&values(&[(Signal::Csat, f64::NAN)])), None);
}

#[test]
fn a_signal_of_weight_zero_takes_no_part() {
    let mapping = Mapping::linear(0.0, 10.0).unwrap();
    let mut rules = std::array::from_fn(|_| SignalRule::new(mapping.clone(), 1.0).unwrap());
    rules[Signal::Csat.index()].weight = 0.0;
    let model = HealthModel::new(rules, Bands::default()).unwrap();
    let score = model
        .score(&values(&[(Signal::Nps, 5.0), (Signal::Csat, 0.0)]))
        .unwrap();
    assert_eq!(score.score, 50.0);
    assert_eq!(score.signals.len(), 1);
    assert_eq!(model.score(&values(&[(Signal::Csat, 1.0)])), None);
}

#[test]
fn the_bands_meet_at_their_limits() {
    let bands = Bands::default();
    assert_eq!(bands.of(100.0), Band::Healthy);
    assert_eq!(bands.of(70.0), Band::Healthy);
    assert_eq!(bands.of(69.999_999), Band::Neutral);
    assert_eq!(bands.of(40.0), Band::Neutral);
    assert_eq!(bands.of(39.999_999), Band::AtRisk);
    assert_eq!(bands.of(0.0), Band::AtRisk);
}

#[test]
fn the_signal_that_moved_a_score_is_the_one_whose_change_alone_moved_it_most() {
    let model = HealthModel::default();
    let before = values(&[(Signal::Nps, 10.0), (Signal::TicketsOpen, 0.0)]);
    // A failed payment comes in and a ticket opens: the promoter's share of the weights
    // falls, but it is the payment that takes the score down (undone, 90 against 51.4).
    let after = values(&[
        (Signal::Nps, 10.0),
        (Signal::TicketsOpen, 1.0),
        (Signal::PaymentFailures, 1.0),
    ]);
    assert_eq!(
        model.moved_by(&before, &after),
        Some(Signal::PaymentFailures)
    );
    // The first signal makes the score alone.
    assert_eq!(model.moved_by(&values(&[]), &before), Some(Signal::Nps));
    assert_eq!(model.moved_by(&before, &before), None);
    assert_eq!(model.moved_by(&before, &values(&[])), None);
}

/// A model and values drawn at random: linear or step mappings, weights including 0,
/// values including missing ones.
fn model_and_values() -> impl Strategy<Value = (HealthModel, SignalValues)> {
    let mapping = prop_oneof![
        (-50.0..50.0f64, 1.0..100.0f64, any::<bool>()).prop_map(|(zero, span, down)| {
            let full = if down { zero - span } else { zero + span };
            Mapping::linear(zero, full).unwrap()
        }),
        prop::collection::btree_map(-100i32..100, 0.0..=100.0f64, 1..=MAX_THRESHOLDS).prop_map(
            |steps| {
                Mapping::thresholds(
                    steps
                        .into_iter()
                        .map(|(at, score)| threshold(f64::from(at) / 2.0, score))
                        .collect(),
                )
                .unwrap()
            }
        ),
    ];
    let weight = prop_oneof![Just(0.0), 0.0..=MAX_WEIGHT, Just(MAX_WEIGHT)];
    let rule = (mapping, weight).prop_map(|(m, w)| SignalRule::new(m, w).unwrap());
    let value = prop::option::of(-120.0..120.0f64);
    (
        prop::array::uniform8(rule),
        0.0..99.0f64,
        1.0..50.0f64,
        prop::array::uniform8(value),
    )
        .prop_filter_map("some weight", |(mut rules, at_risk, gap, values)| {
            if rules.iter().all(|r| r.weight == 0.0) {
                rules[0].weight = 1.0;
            }
            let bands = Bands::new((at_risk + gap).min(100.0), at_risk).ok()?;
            Some((HealthModel::new(rules, bands).ok()?, values))
        })
}

/// The score as its definition reads, with a step mapping scanned from its first step.
fn brute_force(model: &HealthModel, values: &SignalValues) -> Option<f64> {
    let (mut weighted, mut weights) = (0.0, 0.0);
    for signal in Signal::ALL {
        let rule = model.rule(signal);
        let Some(value) = values[signal.index()] else {
            continue;
        };
        if rule.weight == 0.0 {
            continue;
        }
        let mapped = match &rule.mapping {
            Mapping::Linear { zero, full } => {
                let share = (value - zero) / (full - zero);
                if share <= 0.0 {
                    0.0
                } else if share >= 1.0 {
                    100.0
                } else {
                    100.0 * share
                }
            }
            Mapping::Thresholds(steps) => {
                let mut score = steps[0].score;
                for step in steps {
                    if value >= step.at_least {
                        score = step.score;
                    }
                }
                score
            }
        };
        weighted += rule.weight * mapped;
        weights += rule.weight;
    }
    (weights > 0.0).then(|| weighted / weights)
}

proptest! {
    #[test]
    fn the_score_is_the_weighted_mean_of_the_signals_present((model, values) in model_and_values()) {
        let expected = brute_force(&model, &values);
        let scored = model.score(&values);
        prop_assert_eq!(scored.is_some(), expected.is_some());
        if let (Some(scored), Some(expected)) = (scored, expected) {
            prop_assert!((scored.score - expected).abs() < 1e-9, "{} against {}", scored.score, expected);
            prop_assert!((0.0..=100.0).contains(&scored.score));
            prop_assert_eq!(scored.band, model.bands.of(scored.score));
            let sum: f64 = scored.signals.iter().map(|s| s.contribution).sum();
            prop_assert!((sum - scored.score).abs() < 1e-9);
            for part in &scored.signals {
                prop_assert!((0.0..=100.0).contains(&part.mapped));
                prop_assert_eq!(Some(part.value), values[part.signal.index()]);
            }
        }
    }

    #[test]
    fn the_moving_signal_is_the_one_whose_change_undone_moves_the_score_most(
        (model, before) in model_and_values(),
        after in prop::array::uniform8(prop::option::of(-120.0..120.0f64)),
    ) {
        let Some(now) = brute_force(&model, &after) else {
            prop_assert_eq!(model.moved_by(&before, &after), None);
            return Ok(());
        };
        let effect = |signal: Signal| {
            let mut undone = after;
            undone[signal.index()] = before[signal.index()];
            brute_force(&model, &undone).map_or(f64::INFINITY, |w| (now - w).abs())
        };
        let changed: Vec<Signal> = Signal::ALL
            .into_iter()
            .filter(|s| before[s.index()] != after[s.index()])
            .collect();
        match model.moved_by(&before, &after) {
            None => prop_assert!(changed.is_empty()),
            Some(moved) => {
                prop_assert!(changed.contains(&moved));
                for signal in changed {
                    prop_assert!(effect(moved) >= effect(signal) - 1e-9);
                }
            }
        }
    }
}
