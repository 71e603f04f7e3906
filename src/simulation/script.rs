//! One conversation's script, drawn from its own random stream.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::types::*;

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start the conversation.
    Start(ConversationStart),
    /// A turn.
    Turn(Interaction),
    /// A decision.
    Decide(Decision),
    /// An error.
    Error {
        /// Class.
        error_type: &'static str,
        /// Message.
        message: &'static str,
    },
    /// A compliance violation.
    Violation {
        /// Policy.
        policy: &'static str,
        /// Severity.
        severity: &'static str,
        /// What happened.
        description: &'static str,
    },
    /// The end.
    End(ConversationEnd),
}

/// A step at a virtual offset from the conversation's start.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Milliseconds after the start.
    pub offset_ms: u64,
    /// What happens.
    pub action: Action,
    /// Personal data the customer says in this step, as (kind, value): `card_number`, `email`,
    /// `phone`, `date_of_birth`.
    pub planted: Vec<(&'static str, String)>,
}

struct Tenant {
    id: &'static str,
    name: &'static str,
    agents: &'static [&'static str],
    policy: &'static str,
    intents: &'static [usize],
}

const TENANTS: &[Tenant] = &[
    Tenant {
        id: "acme-telco",
        name: "Acme Telco",
        agents: &["acme-billing-bot", "acme-support-bot", "acme-sales-bot"],
        policy: "call_recording_disclosure",
        intents: &[0, 1, 2, 3, 4],
    },
    Tenant {
        id: "globex-bank",
        name: "Globex Bank",
        agents: &["globex-cards-bot", "globex-loans-bot"],
        policy: "pci_dss",
        intents: &[0, 1, 5, 6],
    },
    Tenant {
        id: "initech-insurance",
        name: "Initech Insurance",
        agents: &["initech-claims-bot", "initech-policy-bot"],
        policy: "gdpr_consent",
        intents: &[0, 7, 3],
    },
    Tenant {
        id: "umbrella-health",
        name: "Umbrella Health",
        agents: &["umbrella-appointments-bot"],
        policy: "hipaa",
        intents: &[8, 1, 7],
    },
];

/// A reason to call, told as a flow: the customer's opening, then exchanges in their order
/// (the agent's answer, then the customer's reply to it). A conversation takes the first one
/// to three exchanges, so every line follows from the one before and none repeats.
struct Intent {
    name: &'static str,
    opening: &'static [&'static str],
    /// (agent, customer) in the order they happen.
    flow: &'static [(&'static str, &'static str)],
    tool: &'static str,
    queue: &'static str,
    /// Typical customer sentiment at the opening.
    mood: f64,
}

const INTENTS: &[Intent] = &[
    Intent {
        name: "billing_dispute",
        opening: &[
            "My last bill is almost twice what it usually is.",
            "I was charged twice this month.",
            "There's a fee on my statement I never agreed to.",
        ],
        flow: &[
            (
                "I can see the charge on your account. Let me check what it was for.",
                "It says 'service adjustment', what is that?",
            ),
            (
                "I found the item: it's a one-time adjustment from last month's outage credit being reversed.",
                "I've been a customer for ten years. Can you just take it off?",
            ),
            ("I've removed the adjustment; you'll see the credit on your next bill.", "Okay, thank you."),
        ],
        tool: "billing.lookup_invoice",
        queue: "billing-specialists",
        mood: -0.5,
    },
    Intent {
        name: "password_reset",
        opening: &[
            "I can't log in to my account.",
            "I forgot my password and the reset email never arrives.",
            "My account says it's locked.",
        ],
        flow: &[
            (
                "I can help you reset it. Can you confirm the email on the account?",
                "Yes, it's the one ending in example.com.",
            ),
            ("Thanks. I've sent a new reset link; it can take a minute to arrive.", "Okay, I got it. The code is in."),
            ("Your account is unlocked now. Try logging in again.", "It works, I'm in."),
        ],
        tool: "identity.send_reset_link",
        queue: "account-security",
        mood: -0.2,
    },
    Intent {
        name: "plan_upgrade",
        opening: &[
            "I'd like more data on my plan.",
            "What plans do you have with more data?",
            "Can I upgrade to the unlimited plan?",
        ],
        flow: &[
            ("The Unlimited plan is 15 dollars more per month and includes 50 GB of hotspot.", "Does it start today?"),
            ("It would start with your next billing cycle. Shall I switch you?", "Sounds good, let's do it."),
            ("Done: your plan is upgraded. You'll get a confirmation by text.", "Great."),
        ],
        tool: "catalog.quote_plan",
        queue: "sales",
        mood: 0.3,
    },
    Intent {
        name: "cancel_service",
        opening: &["I want to cancel my service.", "Please close my account.", "I'm moving and want to cancel."],
        flow: &[
            ("I'm sorry to hear that. May I ask why you're leaving?", "It's just too expensive for me."),
            (
                "I can offer you three months at half price if you stay.",
                "No, I've made up my mind. What's the cancellation fee?",
            ),
            ("There's no fee. Your service will end at the close of this billing period.", "Fine, thanks."),
        ],
        tool: "retention.offer",
        queue: "retention",
        mood: -0.3,
    },
    Intent {
        name: "technical_support",
        opening: &[
            "My internet keeps dropping every few minutes.",
            "The router light is blinking red.",
            "I have no signal at home.",
        ],
        flow: &[
            ("Let's run a line test from here. Have you restarted the router?", "I already restarted it twice."),
            (
                "The line looks fine. Please unplug the router for thirty seconds and plug it back in.",
                "Okay, it's plugged back in.",
            ),
            ("I can see it reconnecting now; the light should turn green.", "Yes, it's green now."),
        ],
        tool: "network.line_test",
        queue: "tier2-support",
        mood: -0.4,
    },
    Intent {
        name: "card_lost",
        opening: &[
            "I lost my credit card.",
            "I think my card was stolen.",
            "There are purchases on my card I didn't make.",
        ],
        flow: &[
            (
                "I've frozen the card so no new charges can go through. When did you last use it?",
                "Yesterday, at a gas station.",
            ),
            (
                "I've opened a dispute for the charges after that. Shall I order a replacement?",
                "Yes, please. How long until it arrives?",
            ),
            ("A replacement is on its way and should arrive in 3 to 5 days.", "Thanks."),
        ],
        tool: "cards.freeze",
        queue: "fraud-team",
        mood: -0.6,
    },
    Intent {
        name: "loan_status",
        opening: &[
            "Where is my loan application?",
            "Has my mortgage been approved?",
            "I submitted documents last week.",
        ],
        flow: &[
            ("Your application is in underwriting.", "Do you need anything else from me?"),
            ("We have everything we need for now.", "When will I hear back?"),
            ("You should get a decision within two business days.", "Okay, thanks."),
        ],
        tool: "loans.application_status",
        queue: "loan-officers",
        mood: 0.0,
    },
    Intent {
        name: "claim_status",
        opening: &[
            "I filed a claim after the storm; what's the status?",
            "When will my claim be paid?",
            "An adjuster was supposed to call me.",
        ],
        flow: &[
            ("Let me look it up. Your claim is with the adjuster now.", "It's been three weeks."),
            (
                "I'm sorry for the wait. The adjuster visit is booked for Thursday.",
                "Can I send more photos before that?",
            ),
            ("Yes, you can upload photos in the app under 'My claims'.", "Okay, I'll do that."),
        ],
        tool: "claims.lookup",
        queue: "claims-adjusters",
        mood: -0.2,
    },
    Intent {
        name: "appointment_booking",
        opening: &[
            "I need to book an appointment with Dr. Patel.",
            "Can I move my appointment to next week?",
            "I need a blood test.",
        ],
        flow: &[
            ("There are openings Tuesday at 9:30 and Thursday at 14:00.", "Morning works better for me."),
            ("I've booked Tuesday at 9:30 for you. Does that suit you?", "Tuesday is fine."),
            ("You'll get a reminder the day before.", "Great, thank you."),
        ],
        tool: "scheduling.find_slots",
        queue: "front-desk",
        mood: 0.2,
    },
];

const ERRORS: &[(&str, &str)] = &[
    ("llm_timeout", "LLM did not answer within 8s; retried"),
    ("asr_failure", "speech recognition returned no transcript for 2.1s of audio"),
    ("tts_error", "text-to-speech provider returned 503"),
    ("tool_call_failed", "tool call failed: upstream returned 500"),
];

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    items.choose(rng).expect("non-empty")
}

fn weighted<T: Copy>(rng: &mut ChaCha8Rng, items: &[(T, u32)]) -> T {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut roll = rng.random_range(0..total);
    for (item, w) in items {
        if roll < *w {
            return *item;
        }
        roll -= w;
    }
    items[items.len() - 1].0
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Shortens every pause between two steps longer than `cap_ms` to `cap_ms` (an email thread's
/// hours become minutes); the order of the steps stays.
pub fn cap_gaps(steps: &mut [Step], cap_ms: u64) {
    let mut previous_old = 0;
    let mut previous_new = 0;
    for step in steps {
        let gap = step.offset_ms.saturating_sub(previous_old).min(cap_ms);
        previous_old = step.offset_ms;
        step.offset_ms = previous_new + gap;
        previous_new = step.offset_ms;
    }
}

/// Mixed into the seed of the personal-data stream.
const PII_SEED: u64 = 0x5049_495f_5345_4544;

/// A Luhn-valid card number read out in groups of four (16 digits, a Visa or Mastercard prefix).
fn card_number(rng: &mut ChaCha8Rng) -> String {
    let mut digits: Vec<u8> = if rng.random_bool(0.5) { vec![4] } else { vec![5, rng.random_range(1..=5)] };
    while digits.len() < 15 {
        digits.push(rng.random_range(0..10));
    }
    // The check digit.
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    digits.push(((10 - sum % 10) % 10) as u8);
    digits.chunks(4).map(|g| g.iter().map(|d| char::from(b'0' + d)).collect::<String>()).collect::<Vec<_>>().join(" ")
}

const FIRST_NAMES: &[&str] = &["maria", "james", "li", "fatima", "olga", "diego", "amara", "kenji"];
const LAST_NAMES: &[&str] = &["garcia", "smith", "chen", "okafor", "novak", "rossi", "tanaka", "kowalski"];

/// Sometimes appends personal data to what the customer says; returns the text and what was
/// planted.
fn personal_data(rng: &mut ChaCha8Rng, text: &str) -> (String, Vec<(&'static str, String)>) {
    if !rng.random_bool(0.3) {
        return (text.to_string(), Vec::new());
    }
    let kind = weighted(rng, &[("card_number", 3), ("email", 3), ("phone", 3), ("date_of_birth", 2)]);
    let (value, sentence) = match kind {
        "card_number" => {
            let v = card_number(rng);
            let s = format!("My card number is {v}.");
            (v, s)
        }
        "email" => {
            let v = format!(
                "{}.{}{}@{}",
                pick(rng, FIRST_NAMES),
                pick(rng, LAST_NAMES),
                rng.random_range(1..100),
                pick(rng, &["example.com", "example.org", "mail.example.net"])
            );
            let s = format!("You can email me at {v}.");
            (v, s)
        }
        "phone" => {
            let n = rng.random_range(100..200);
            let v = match rng.random_range(0..3) {
                0 => format!("+1 415 555 0{n}"),
                1 => format!("(212) 555-0{n}"),
                _ => format!("+44 20 7946 0{n}"),
            };
            let s = format!("Call me back on {v}.");
            (v, s)
        }
        _ => {
            let v = format!("{}-{:02}-{:02}", rng.random_range(1940..2005), rng.random_range(1..13), rng.random_range(1..29));
            let s = format!("My date of birth is {v}.");
            (v, s)
        }
    };
    (format!("{text} {sentence}"), vec![(kind, value)])
}

/// The script of conversation `index` of a run with `seed`.
pub fn generate(seed: u64, index: u64, run_id: &str) -> Vec<Step> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index + 1);
    let tenant = pick(&mut rng, TENANTS);
    let agent = *pick(&mut rng, tenant.agents);
    let intent = &INTENTS[*pick(&mut rng, tenant.intents)];
    let channel =
        weighted(&mut rng, &[(Channel::Voice, 50), (Channel::Chat, 35), (Channel::Sms, 10), (Channel::Email, 5)]);
    let language = weighted(&mut rng, &[("en-US", 70), ("es-US", 15), ("en-GB", 10), ("de-DE", 5)]);
    let voice = channel == Channel::Voice;
    let customer = format!("cust-{:05}", rng.random_range(0..50_000));

    let mut steps = Vec::new();
    let mut t: u64 = 0;
    let mut push = |t: u64, action: Action| steps.push(Step { offset_ms: t, action, planted: Vec::new() });
    push(
        0,
        Action::Start(
            ConversationStart::new(tenant.id, agent, customer, channel)
                .language(language)
                .meta(super::RUN_METADATA_KEY, run_id)
                .meta("queue", intent.queue),
        ),
    );

    // Time for the customer to read/think and type or speak.
    let think = |rng: &mut ChaCha8Rng| -> u64 {
        match channel {
            Channel::Voice => rng.random_range(300..1500),
            Channel::Chat => rng.random_range(3000..15000),
            Channel::Sms => rng.random_range(10_000..60_000),
            Channel::Email => rng.random_range(600_000..3_600_000),
        }
    };
    let speak = |rng: &mut ChaCha8Rng, text: &str| -> f64 {
        if voice { text.len() as f64 * rng.random_range(55.0..75.0) } else { 0.0 }
    };
    // An agent turn. Sentiment is the customer's, so agent turns carry none. A voice turn
    // that answers a customer carries the latency breakdown from the customer's end of speech
    // to the agent's first audio; one that answers nobody (the greeting) carries none.
    let agent_turn = |rng: &mut ChaCha8Rng, text: &str, answers_customer: bool| -> Interaction {
        let mut turn = Interaction::agent(text)
            .assertiveness(round(rng.random_range(0.45..0.9)))
            .compliance(tenant.policy, round(rng.random_range(0.82..1.0)));
        if voice {
            if answers_customer {
                let stt = rng.random_range(90.0..260.0);
                let eou = rng.random_range(150.0..600.0);
                let ttft = rng.random_range(180.0..900.0);
                let tts = rng.random_range(60.0..220.0);
                turn = turn.latency(TurnLatency {
                    stt_ms: Some(round(stt)),
                    end_of_utterance_ms: Some(round(eou)),
                    llm_ttft_ms: Some(round(ttft)),
                    tts_ttfb_ms: Some(round(tts)),
                    response_ms: Some(round(stt + eou + ttft + tts)),
                    interrupted: rng.random_bool(0.06),
                    ..TurnLatency::default()
                });
            }
            turn = turn.duration_ms(round(speak(rng, text)));
        }
        turn
    };
    let respond =
        |rng: &mut ChaCha8Rng| -> u64 { if voice { rng.random_range(500..2000) } else { rng.random_range(800..4000) } };

    // Greeting.
    t += 300;
    let greeting = format!("Hi, you've reached {}. I'm the virtual assistant; how can I help you today?", tenant.name);
    let g = agent_turn(&mut rng, &greeting, false);
    let g_ms = g.duration_ms.unwrap_or(0.0) as u64;
    push(t, Action::Turn(g));
    t += g_ms + think(&mut rng);

    // The problem.
    let mut mood = (intent.mood + rng.random_range(-0.25..0.25)).clamp(-1.0, 1.0);
    let opening = *pick(&mut rng, intent.opening);
    let confidence = round(rng.random_range(0.72..0.99));
    let spoken = speak(&mut rng, opening);
    // Personal data, from a stream of its own (the rest of the script is the same with or
    // without it): sometimes the customer reads out a card number, an email, a phone number or
    // a date of birth with the problem.
    let mut pii = ChaCha8Rng::seed_from_u64(seed ^ PII_SEED);
    pii.set_stream(index + 1);
    let (said, planted) = personal_data(&mut pii, opening);
    let mut customer_turn = Interaction::customer(said).sentiment(round(mood)).intent(intent.name, confidence);
    if voice {
        customer_turn = customer_turn.duration_ms(round(spoken));
    }
    push(t, Action::Turn(customer_turn));
    // The start, the greeting, then this turn.
    const OPENING_STEP: usize = 2;
    t += spoken as u64 + rng.random_range(120..400);
    push(
        t,
        Action::Decide(
            Decision::new(DecisionType::IntentDetection, intent.name, "classified from the customer's first statement")
                .confidence(confidence)
                .duration_ms(round(rng.random_range(80.0..300.0))),
        ),
    );

    let outcome = weighted(
        &mut rng,
        &[
            (Resolution::Resolved, 62),
            (Resolution::Transferred, 14),
            (Resolution::Escalated, 6),
            (Resolution::Unresolved, 8),
            (Resolution::Abandoned, 10),
        ],
    );
    // A resolved conversation goes through the whole flow; the others stop before its
    // resolving exchange.
    let exchanges = match outcome {
        Resolution::Resolved => intent.flow.len(),
        _ => rng.random_range(1..intent.flow.len()),
    };
    let error_at = rng.random_bool(0.05).then(|| rng.random_range(0..exchanges));
    let violation_at = rng.random_bool(0.03).then(|| rng.random_range(0..exchanges));
    for k in 0..exchanges {
        t += respond(&mut rng);
        if k == 0 || rng.random_bool(0.3) {
            push(
                t,
                Action::Decide(
                    Decision::new(DecisionType::ToolCall, intent.tool, "look up the customer's account")
                        .confidence(round(rng.random_range(0.8..0.99)))
                        .duration_ms(round(rng.random_range(120.0..1500.0))),
                ),
            );
            t += rng.random_range(150..1500);
        }
        if error_at == Some(k) {
            let (error_type, message) = *pick(&mut rng, ERRORS);
            push(t, Action::Error { error_type, message });
            t += rng.random_range(500..3000);
        }
        let (reply, answer) = intent.flow[k];
        let a = agent_turn(&mut rng, reply, true);
        let a_ms = a.duration_ms.unwrap_or(0.0) as u64;
        push(t, Action::Turn(a));
        if violation_at == Some(k) {
            push(
                t + a_ms,
                Action::Violation {
                    policy: tenant.policy,
                    severity: if rng.random_bool(0.5) { "medium" } else { "high" },
                    description: "agent turn breached the tenant's compliance policy",
                },
            );
        }
        t += a_ms + think(&mut rng);
        if outcome == Resolution::Abandoned && k + 1 == exchanges {
            break; // the customer never answers
        }
        mood = (mood + if outcome == Resolution::Resolved { 0.2 } else { -0.1 }).clamp(-1.0, 1.0);
        let spoken = speak(&mut rng, answer);
        let mut c = Interaction::customer(answer).sentiment(round(mood));
        if voice {
            c = c.duration_ms(round(spoken));
        }
        push(t, Action::Turn(c));
        t += spoken as u64;
    }

    t += respond(&mut rng);
    let end = match outcome {
        Resolution::Resolved => {
            push(t, Action::Turn(agent_turn(&mut rng, "Glad I could help. Is there anything else?", true)));
            t += think(&mut rng);
            push(
                t,
                Action::Turn(Interaction::customer("No, that's all. Thanks!").sentiment(round((mood + 0.3).min(1.0)))),
            );
            t += 400;
            ConversationEnd::new(outcome).rating(weighted(&mut rng, &[(5, 55), (4, 35), (3, 10)])).tag(intent.name)
        }
        Resolution::Transferred => {
            push(
                t,
                Action::Decide(
                    Decision::transfer(intent.queue, "needs a human specialist")
                        .confidence(round(rng.random_range(0.6..0.95)))
                        .duration_ms(round(rng.random_range(100.0..400.0))),
                ),
            );
            t += 200;
            push(t, Action::Turn(agent_turn(&mut rng, "I'm connecting you with a specialist now. Please hold.", true)));
            t += rng.random_range(1000..4000);
            let end = ConversationEnd::new(outcome).tag(intent.name).tag("handoff");
            if rng.random_bool(0.5) { end.rating(weighted(&mut rng, &[(4, 40), (3, 40), (2, 20)])) } else { end }
        }
        Resolution::Escalated => {
            push(
                t,
                Action::Decide(
                    Decision::new(DecisionType::Escalation, "supervisor", "customer asked for a supervisor")
                        .confidence(round(rng.random_range(0.7..0.99))),
                ),
            );
            t += 300;
            push(
                t,
                Action::Turn(agent_turn(
                    &mut rng,
                    "I've escalated this to a supervisor who will call you back today.",
                    true,
                )),
            );
            t += 1500;
            ConversationEnd::new(outcome).rating(weighted(&mut rng, &[(3, 40), (2, 40), (1, 20)])).tag(intent.name)
        }
        Resolution::Unresolved => {
            push(t, Action::Turn(agent_turn(&mut rng, "I'm sorry, I wasn't able to solve this today.", true)));
            t += 1200;
            ConversationEnd::new(outcome).rating(weighted(&mut rng, &[(1, 50), (2, 40), (3, 10)])).tag(intent.name)
        }
        _ => {
            // Abandoned: the customer left; the session times out after a while.
            t += rng.random_range(20_000..60_000);
            ConversationEnd::new(Resolution::Abandoned).tag(intent.name)
        }
    };
    push(t, Action::End(end));
    debug_assert!(matches!(&steps[OPENING_STEP].action, Action::Turn(turn) if turn.speaker == TurnSpeaker::Customer));
    steps[OPENING_STEP].planted = planted;
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_script_and_offsets_never_go_back() {
        for i in 0..50 {
            let a = generate(7, i, "run");
            assert_eq!(a, generate(7, i, "run"));
            assert!(a.windows(2).all(|w| w[0].offset_ms <= w[1].offset_ms), "script {i} goes back in time");
            assert!(matches!(a.first().unwrap().action, Action::Start(_)));
            assert!(matches!(a.last().unwrap().action, Action::End(_)));
        }
        assert_ne!(generate(7, 0, "run"), generate(8, 0, "run"));
    }

    fn turns(steps: &[Step]) -> Vec<&Interaction> {
        steps.iter().filter_map(|s| if let Action::Turn(t) = &s.action { Some(t) } else { None }).collect()
    }

    // Regression test for issue 12, item 12: a conversation repeated "Morning works better for
    // me." three times, and the agent sent a reset link before the customer confirmed the
    // address.
    #[test]
    fn conversations_follow_their_intents_flow_without_repeating_a_line() {
        for i in 0..500 {
            let steps = generate(7, i, "run");
            let lines: Vec<&str> = turns(&steps).iter().map(|t| t.content.as_str()).collect();
            let mut seen = std::collections::BTreeSet::new();
            for line in &lines {
                assert!(seen.insert(*line), "script {i} repeats {line:?}: {lines:#?}");
            }
            // Each flow line comes after the ones before it in its intent's flow.
            for intent in INTENTS {
                let positions: Vec<Option<usize>> = intent
                    .flow
                    .iter()
                    .flat_map(|(a, c)| [a, c])
                    .map(|line| lines.iter().position(|l| l == line))
                    .collect();
                let present: Vec<usize> = positions.iter().map_while(|p| *p).collect();
                assert!(present.windows(2).all(|w| w[0] < w[1]), "script {i} is out of its flow's order: {lines:#?}");
                assert!(
                    positions[present.len()..].iter().all(Option::is_none),
                    "script {i} skips part of its flow: {lines:#?}"
                );
            }
            let confirm = lines.iter().position(|l| l.starts_with("Yes, it's the one ending"));
            let link = lines.iter().position(|l| l.contains("sent a new reset link"));
            if let Some(link) = link {
                assert!(confirm.is_some_and(|c| c < link), "script {i}: reset link before the address was confirmed");
            }
        }
    }

    // Regression test for issue 12, item 12: the greeting carried STT latency and a response
    // time with no customer turn before it, and agent turns carried sentiment scores.
    #[test]
    fn only_agent_turns_that_answer_a_customer_carry_latency_and_agent_turns_carry_no_sentiment() {
        let mut with_latency = 0;
        for i in 0..300 {
            let steps = generate(7, i, "run");
            let mut customer_spoke = false;
            for turn in turns(&steps) {
                match turn.speaker {
                    TurnSpeaker::Customer => customer_spoke = true,
                    TurnSpeaker::Agent => {
                        assert_eq!(
                            turn.metadata.sentiment, None,
                            "script {i}: agent turn {:?} has a sentiment",
                            turn.content
                        );
                        if turn.latency.is_some() {
                            with_latency += 1;
                            assert!(
                                customer_spoke,
                                "script {i}: {:?} has latency but answers no customer",
                                turn.content
                            );
                        }
                        customer_spoke = false;
                    }
                }
            }
        }
        assert!(with_latency > 100, "voice answers carry latency ({with_latency})");
    }

    // Regression test for issue 12, item 2: capped pauses keep the order and shorten only
    // what is longer than the cap.
    #[test]
    fn capping_gaps_shortens_only_long_pauses() {
        let mut steps: Vec<Step> = [0, 1_000, 3_601_000, 3_602_000]
            .into_iter()
            .map(|offset_ms| Step { offset_ms, action: Action::Error { error_type: "x", message: "y" }, planted: Vec::new() })
            .collect();
        cap_gaps(&mut steps, 60_000);
        assert_eq!(steps.iter().map(|s| s.offset_ms).collect::<Vec<_>>(), vec![0, 1_000, 61_000, 62_000]);
    }
}
