//! Survey KPIs: NPS, CSAT and CES, from score counts, and the share of answers with a
//! comment.
//!
//! The tally keeps one counter per score of each scale, the sufficient statistics for every
//! variant of these KPIs, so buckets merge exactly and any definition can be derived later,
//! and the answers of every survey with and without a comment. The formulas live here and
//! nowhere else.

use serde::{Deserialize, Serialize};

use crate::event::Survey;
use crate::window::Tally;

/// Counts of responses per score, per survey.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurveyTally {
    /// Index = score 0..=10.
    nps: [u64; 11],
    /// Index = score - 1, scores 1..=5.
    csat: [u64; 5],
    /// Index = score - 1, scores 1..=7 (7 = "it was easy").
    ces: [u64; 7],
    /// Answers of every survey, and those of them with a comment. The answers are counted
    /// here again rather than summed from the scores: components written before these
    /// counts existed lack both, so their answers, whose comments were never read, count
    /// in neither instead of as answers without a comment.
    #[serde(default)]
    answers: u64,
    #[serde(default)]
    commented: u64,
}

impl Tally for SurveyTally {
    fn merge(&mut self, other: &Self) {
        add_counts(&mut self.nps, &other.nps);
        add_counts(&mut self.csat, &other.csat);
        add_counts(&mut self.ces, &other.ces);
        self.answers += other.answers;
        self.commented += other.commented;
    }
}

fn add_counts(into: &mut [u64], from: &[u64]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

impl SurveyTally {
    /// Records one response, with or without a comment. The score has been validated
    /// against the survey's scale.
    pub fn record(&mut self, survey: Survey, score: u8, commented: bool) {
        let (low, _) = survey.scale();
        let index = usize::from(score - low);
        let counts: &mut [u64] = match survey {
            Survey::Nps => &mut self.nps,
            Survey::Csat => &mut self.csat,
            Survey::Ces => &mut self.ces,
        };
        counts[index] += 1;
        self.answers += 1;
        self.commented += u64::from(commented);
    }

    /// The answers of every survey and those with a comment.
    pub fn comments(&self) -> Comments {
        Comments {
            commented: self.commented,
            answers: self.answers,
        }
    }

    pub fn nps(&self) -> Nps {
        Nps {
            detractors: self.nps[0..=6].iter().sum(),
            passives: self.nps[7..=8].iter().sum(),
            promoters: self.nps[9..=10].iter().sum(),
        }
    }

    pub fn csat(&self) -> Csat {
        Csat {
            satisfied: self.csat[3..=4].iter().sum(),
            responses: self.csat.iter().sum(),
        }
    }

    pub fn ces(&self) -> Ces {
        Ces {
            score_sum: self
                .ces
                .iter()
                .zip(1u64..)
                .map(|(count, score)| count * score)
                .sum(),
            easy: self.ces[4..=6].iter().sum(),
            responses: self.ces.iter().sum(),
        }
    }
}

/// Net Promoter Score components: promoters score 9-10, passives 7-8, detractors 0-6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nps {
    pub promoters: u64,
    pub passives: u64,
    pub detractors: u64,
}

impl Nps {
    pub fn responses(&self) -> u64 {
        self.promoters + self.passives + self.detractors
    }

    /// NPS = 100 x (promoters - detractors) / responses, in -100..=100; `None` without responses.
    pub fn value(&self) -> Option<f64> {
        let responses = self.responses();
        (responses > 0)
            .then(|| 100.0 * (self.promoters as f64 - self.detractors as f64) / responses as f64)
    }
}

/// Customer satisfaction components: satisfied = scores 4 and 5 of 1-5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Csat {
    pub satisfied: u64,
    pub responses: u64,
}

impl Csat {
    /// CSAT = satisfied / responses, in 0..=1; `None` without responses.
    pub fn ratio(&self) -> Option<f64> {
        (self.responses > 0).then(|| self.satisfied as f64 / self.responses as f64)
    }
}

/// Customer effort components on the 1-7 scale: the sum of scores and the count of "easy"
/// answers (5 or more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ces {
    pub score_sum: u64,
    pub easy: u64,
    pub responses: u64,
}

impl Ces {
    /// CES = mean score, in 1..=7; `None` without responses.
    pub fn mean(&self) -> Option<f64> {
        (self.responses > 0).then(|| self.score_sum as f64 / self.responses as f64)
    }

    /// Share of responses scoring 5 or more, in 0..=1; `None` without responses.
    pub fn easy_ratio(&self) -> Option<f64> {
        (self.responses > 0).then(|| self.easy as f64 / self.responses as f64)
    }
}

/// Comment components: answers of every survey (NPS, CSAT and CES) and those with a
/// comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Comments {
    pub commented: u64,
    pub answers: u64,
}

impl Comments {
    /// Comment ratio = commented / answers, in 0..=1; `None` without answers.
    pub fn ratio(&self) -> Option<f64> {
        (self.answers > 0).then(|| self.commented as f64 / self.answers as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(survey: Survey, scores: &[u8]) -> SurveyTally {
        let mut t = SurveyTally::default();
        for &s in scores {
            t.record(survey, s, false);
        }
        t
    }

    #[test]
    fn nps_edges() {
        assert_eq!(SurveyTally::default().nps().value(), None);
        assert_eq!(tally(Survey::Nps, &[9, 10, 10]).nps().value(), Some(100.0));
        assert_eq!(tally(Survey::Nps, &[0, 6, 3]).nps().value(), Some(-100.0));
        assert_eq!(tally(Survey::Nps, &[7, 8]).nps().value(), Some(0.0));
        assert_eq!(tally(Survey::Nps, &[9]).nps().value(), Some(100.0));
        assert_eq!(tally(Survey::Nps, &[6]).nps().value(), Some(-100.0));
    }

    #[test]
    fn nps_counts_passives_in_the_denominator_only() {
        // 2 promoters, 1 passive, 1 detractor: 100 * (2 - 1) / 4 = 25.
        let nps = tally(Survey::Nps, &[9, 10, 7, 6]).nps();
        assert_eq!(
            nps,
            Nps {
                promoters: 2,
                passives: 1,
                detractors: 1
            }
        );
        assert_eq!(nps.value(), Some(25.0));
    }

    #[test]
    fn csat_edges() {
        assert_eq!(SurveyTally::default().csat().ratio(), None);
        assert_eq!(tally(Survey::Csat, &[4, 5]).csat().ratio(), Some(1.0));
        assert_eq!(tally(Survey::Csat, &[1, 2, 3]).csat().ratio(), Some(0.0));
        assert_eq!(tally(Survey::Csat, &[3, 4, 5, 1]).csat().ratio(), Some(0.5));
        assert_eq!(tally(Survey::Csat, &[5]).csat().ratio(), Some(1.0));
    }

    #[test]
    fn ces_edges() {
        let empty = SurveyTally::default().ces();
        assert_eq!((empty.mean(), empty.easy_ratio()), (None, None));
        let one = tally(Survey::Ces, &[7]).ces();
        assert_eq!((one.mean(), one.easy_ratio()), (Some(7.0), Some(1.0)));
        let mixed = tally(Survey::Ces, &[1, 4, 5, 6]).ces();
        assert_eq!(mixed.mean(), Some(4.0));
        assert_eq!(mixed.easy_ratio(), Some(0.5));
    }

    #[test]
    fn surveys_do_not_leak_into_each_other() {
        let mut t = tally(Survey::Nps, &[10]);
        t.record(Survey::Csat, 1, false);
        t.record(Survey::Ces, 1, false);
        assert_eq!(t.nps().responses(), 1);
        assert_eq!(t.csat().responses, 1);
        assert_eq!(t.ces().responses, 1);
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = tally(Survey::Nps, &[10, 0]);
        a.merge(&tally(Survey::Nps, &[8]));
        assert_eq!(a, tally(Survey::Nps, &[10, 0, 8]));
    }

    #[test]
    fn comment_ratio_edges() {
        assert_eq!(SurveyTally::default().comments().ratio(), None);
        let none = tally(Survey::Csat, &[5, 1]).comments();
        assert_eq!(
            none,
            Comments {
                commented: 0,
                answers: 2
            }
        );
        assert_eq!(none.ratio(), Some(0.0));
        let mut all = SurveyTally::default();
        all.record(Survey::Nps, 0, true);
        all.record(Survey::Ces, 7, true);
        assert_eq!(all.comments().ratio(), Some(1.0));
    }

    #[test]
    fn comment_ratio_counts_the_answers_of_every_survey() {
        // NPS with and without a comment, CSAT with one, CES without: 2 of 4.
        let mut t = SurveyTally::default();
        t.record(Survey::Nps, 10, true);
        t.record(Survey::Nps, 3, false);
        t.record(Survey::Csat, 2, true);
        t.record(Survey::Ces, 6, false);
        assert_eq!(
            t.comments(),
            Comments {
                commented: 2,
                answers: 4
            }
        );
        assert_eq!(t.comments().ratio(), Some(0.5));
        // The comment changes no score count.
        assert_eq!(t.nps().responses(), 2);
        assert_eq!(t.csat().satisfied, 0);
    }

    #[test]
    fn merge_adds_comment_counts() {
        // 1 of 1 and 1 of 3: 2 / 4 = 0.5 merged, not the mean of the ratios (0.667).
        let mut a = SurveyTally::default();
        a.record(Survey::Csat, 4, true);
        let mut b = SurveyTally::default();
        b.record(Survey::Nps, 9, true);
        b.record(Survey::Nps, 9, false);
        b.record(Survey::Ces, 1, false);
        a.merge(&b);
        assert_eq!(
            a.comments(),
            Comments {
                commented: 2,
                answers: 4
            }
        );
        assert_eq!(a.comments().ratio(), Some(0.5));
    }

    #[test]
    fn a_tally_written_without_comment_counts_adds_no_answer_to_the_ratio() {
        let earlier: SurveyTally = serde_json::from_str(
            r#"{"nps":[0,0,0,0,0,0,0,0,0,0,3],"csat":[0,0,0,0,1],"ces":[0,0,0,0,0,0,0]}"#,
        )
        .unwrap();
        assert_eq!(earlier.nps().responses(), 3);
        assert_eq!(earlier.comments().ratio(), None);
        let mut now = SurveyTally::default();
        now.record(Survey::Nps, 10, true);
        now.record(Survey::Nps, 10, false);
        now.merge(&earlier);
        assert_eq!(now.nps().responses(), 5);
        assert_eq!(now.comments().ratio(), Some(0.5));
    }
}
