//! One conversation's script, drawn from its own random stream.

use std::collections::BTreeMap;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal};

use super::scenario::{Part, Scenario};
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
        error_type: String,
        /// Message.
        message: String,
    },
    /// A compliance violation.
    Violation {
        /// Policy.
        policy: String,
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

/// The names of the intents a scenario can use (each has its script).
pub fn intent_names() -> Vec<&'static str> {
    INTENTS.iter().map(|i| i.name).collect()
}

fn intent_index(name: &str) -> usize {
    INTENTS.iter().position(|i| i.name == name).expect("a checked intent name")
}

/// A scenario made ready to draw conversations from.
#[derive(Debug, Clone)]
pub struct Model {
    tenants: Vec<TenantModel>,
    tenant_weights: Vec<(usize, f64)>,
    channels: Vec<(Channel, f64)>,
    dists: [LogNormal<f64>; 6],
    barge_in: f64,
    pub(crate) incidents: Vec<IncidentModel>,
}

#[derive(Debug, Clone)]
struct TenantModel {
    id: String,
    name: String,
    agents: Vec<String>,
    policy: String,
    intents: Vec<(usize, f64)>,
    model: String,
}

/// An incident on the script clock (milliseconds from the first arrival).
#[derive(Debug, Clone)]
pub(crate) struct IncidentModel {
    pub(crate) start_ms: u64,
    pub(crate) end_ms: u64,
    tenant: Option<String>,
    agent: Option<String>,
    factors: [f64; 6],
    errors: Option<(f64, String, String)>,
    resolution: Vec<(Resolution, f64)>,
    intents: Vec<(usize, f64)>,
}

impl IncidentModel {
    fn applies(&self, at_ms: u64, tenant: &str, agent: &str) -> bool {
        (self.start_ms..self.end_ms).contains(&at_ms)
            && self.tenant.as_deref().is_none_or(|t| t == tenant)
            && self.agent.as_deref().is_none_or(|a| a == agent)
    }
}

impl Model {
    /// The model of a checked scenario.
    pub fn new(s: &Scenario) -> Model {
        let weight = |name: &str| if s.intents.is_empty() { 1.0 } else { s.intents.get(name).copied().unwrap_or(0.0) };
        let tenants: Vec<TenantModel> = s
            .tenants
            .iter()
            .map(|t| {
                let names: Vec<&str> = match &t.intents {
                    Some(list) => list.iter().map(String::as_str).collect(),
                    None if s.intents.is_empty() => intent_names(),
                    None => s.intents.keys().map(String::as_str).collect(),
                };
                TenantModel {
                    id: t.id.clone(),
                    name: t.name.clone().unwrap_or_else(|| t.id.clone()),
                    agents: t.agents.clone(),
                    policy: t.policy.clone().unwrap_or_else(|| "default_policy".into()),
                    intents: names
                        .into_iter()
                        .map(|n| (intent_index(n), weight(n)))
                        .filter(|(_, w)| *w > 0.0)
                        .collect(),
                    model: s.model_of(&t.id).to_string(),
                }
            })
            .collect();
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Model {
            tenant_weights: s.tenants.iter().enumerate().map(|(i, t)| (i, t.share)).filter(|(_, w)| *w > 0.0).collect(),
            tenants,
            channels: s.channels.iter().map(|(c, w)| (c.0, *w)).filter(|(_, w)| *w > 0.0).collect(),
            dists: Part::ALL.map(|p| s.latency_ms.get(p).log_normal()),
            barge_in: s.barge_in_rate,
            incidents: s
                .incidents
                .iter()
                .map(|inc| {
                    let mut factors = [1.0; 6];
                    for (part, factor) in &inc.effect.latency_ms {
                        factors[part.0.index()] = factor.0;
                    }
                    IncidentModel {
                        start_ms: ms(inc.start),
                        end_ms: ms(inc.start + inc.duration),
                        tenant: inc.tenant.clone(),
                        agent: inc.agent.clone(),
                        factors,
                        errors: inc.effect.errors.as_ref().map(|e| {
                            let message = e.message.clone().unwrap_or_else(|| format!("{} ({})", e.error_type, inc.name));
                            (e.rate, e.error_type.clone(), message)
                        }),
                        resolution: inc.effect.resolution.iter().map(|(r, p)| (r.0, *p)).collect(),
                        intents: inc.effect.intents.iter().map(|(n, p)| (intent_index(n), *p)).collect(),
                    }
                })
                .collect(),
        }
    }

    fn active(&self, at_ms: u64, tenant: &str, agent: &str) -> Vec<usize> {
        (0..self.incidents.len()).filter(|i| self.incidents[*i].applies(at_ms, tenant, agent)).collect()
    }
}

/// What an incident did to one conversation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hit {
    /// Agent answers whose latency it changed.
    pub turns: u32,
    /// Errors it caused.
    pub errors: u32,
    /// It chose the conversation's outcome.
    pub resolution_forced: bool,
    /// It chose the conversation's intent.
    pub intent_shifted: bool,
}

/// One conversation's steps, and the incidents it ran into (every incident whose window,
/// tenant and agent it met, by index, with what each did to it).
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    /// The steps in time order.
    pub steps: Vec<Step>,
    /// Incident index → what it did.
    pub hits: BTreeMap<usize, Hit>,
}

/// One of `items` by weight.
fn choose<T: Copy>(rng: &mut ChaCha8Rng, items: &[(T, f64)]) -> T {
    let total: f64 = items.iter().map(|(_, w)| w).sum();
    let mut roll = rng.random_range(0.0..total);
    for (item, w) in items {
        if roll < *w {
            return *item;
        }
        roll -= w;
    }
    items[items.len() - 1].0
}

/// One of `items` with its probability; `None` with the rest.
fn partial<T: Copy>(rng: &mut ChaCha8Rng, items: &[(T, f64)]) -> Option<T> {
    let mut roll: f64 = rng.random();
    for (item, p) in items {
        if roll < *p {
            return Some(*item);
        }
        roll -= p;
    }
    None
}

/// Tokens of a text, about four characters each, with the message's framing.
fn tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4) + 4
}

struct Gen<'a> {
    rng: ChaCha8Rng,
    model: &'a Model,
    tenant: &'a TenantModel,
    agent: &'a str,
    channel: Channel,
    start_ms: u64,
    max_gap_ms: Option<u64>,
    steps: Vec<Step>,
    hits: BTreeMap<usize, Hit>,
    system_tokens: u64,
    history_tokens: u64,
    /// The previous LLM call's input: the prefix the provider has cached for the next one.
    previous_input: u64,
    /// Where the previous voice turn ended; a turn's telephony time runs from there.
    last_end: u64,
}

impl Gen<'_> {
    fn voice(&self) -> bool {
        self.channel == Channel::Voice
    }

    fn push(&mut self, t: u64, action: Action) {
        let t = self.steps.last().map_or(t, |s| s.offset_ms.max(t));
        self.steps.push(Step { offset_ms: t, action, planted: Vec::new() });
    }

    /// Time for the customer to read/think and type or speak (capped at the run's longest pause).
    fn think(&mut self) -> u64 {
        let ms = match self.channel {
            Channel::Voice => self.rng.random_range(300..1500),
            Channel::Chat => self.rng.random_range(3000..15000),
            Channel::Sms => self.rng.random_range(10_000..60_000),
            _ => self.rng.random_range(600_000..3_600_000),
        };
        self.max_gap_ms.map_or(ms, |cap| ms.min(cap))
    }

    fn speak(&mut self, text: &str) -> f64 {
        if self.voice() { round(text.len() as f64 * self.rng.random_range(55.0..75.0)) } else { 0.0 }
    }

    fn draw(&mut self, part: Part, factors: &[f64; 6]) -> f64 {
        round(self.model.dists[part.index()].sample(&mut self.rng) * factors[part.index()])
    }

    /// The incidents in force at script time `t`: their latency factors, multiplied, and their
    /// indices.
    fn incidents_at(&mut self, t: u64) -> ([f64; 6], Vec<usize>) {
        let active = self.model.active(self.start_ms + t, &self.tenant.id, self.agent);
        let mut factors = [1.0; 6];
        for i in &active {
            self.hits.entry(*i).or_default();
            for (f, g) in factors.iter_mut().zip(self.model.incidents[*i].factors) {
                *f *= g;
            }
        }
        (factors, active)
    }

    /// An LLM call over the conversation so far: the system prompt and the history in, `output`
    /// tokens out; what the previous call sent is read from the provider's prompt cache.
    fn llm(&mut self, output: u64) -> Usage {
        let input = self.system_tokens + self.history_tokens;
        let cached = if self.previous_input >= 1024 { (self.previous_input / 128 * 128).min(input) } else { 0 };
        self.previous_input = input;
        let usage = Usage::llm(self.tenant.model.clone(), input, output);
        if cached > 0 { usage.cached_tokens(cached) } else { usage }
    }

    /// Telephony time of a voice turn ending at `end`: from the previous turn's end.
    fn telephony(&mut self, end: u64) -> f64 {
        let seconds = end.saturating_sub(self.last_end) as f64 / 1000.0;
        self.last_end = self.last_end.max(end);
        round(seconds)
    }

    fn agent_turn(&mut self, text: &str) -> Interaction {
        let policy = self.tenant.policy.clone();
        Interaction::agent(text)
            .assertiveness(round(self.rng.random_range(0.45..0.9)))
            .compliance(policy, round(self.rng.random_range(0.82..1.0)))
    }

    /// The agent's answer to a customer turn that ended at `t_end`: an LLM call and a tool call
    /// first when `tool` is given, errors (an incident's, or `random_error`), then the turn,
    /// with its latency parts on voice. Returns the turn's start, its speaking time, and the
    /// overlap when the customer barged in.
    fn answer(&mut self, t_end: u64, text: &str, tool: Option<&str>, random_error: bool) -> (u64, u64, Option<f64>) {
        let (factors, active) = self.incidents_at(t_end);
        let voice = self.voice();
        let mut errors: Vec<(String, String)> = Vec::new();
        for i in active {
            if let Some((rate, error_type, message)) = self.model.incidents[i].errors.clone() {
                if self.rng.random_bool(rate) {
                    errors.push((error_type, message));
                    self.hits.entry(i).or_default().errors += 1;
                }
            }
            if self.model.incidents[i].factors.iter().any(|f| *f != 1.0) && voice {
                self.hits.entry(i).or_default().turns += 1;
            }
        }
        if random_error {
            let (error_type, message) = *pick(&mut self.rng, ERRORS);
            errors.push((error_type.to_string(), message.to_string()));
        }
        let (stt, eou) = if voice {
            (self.draw(Part::Stt, &factors), self.draw(Part::EndOfUtterance, &factors))
        } else {
            (0.0, round(self.rng.random_range(50.0..200.0)))
        };
        let mut at = t_end as f64 + stt + eou;
        let mut tool_ms = None;
        let mut before = 0.0;
        if let Some(tool) = tool {
            // The LLM call that picks the tool, then the tool.
            let call_ms = round(self.draw(Part::LlmTtft, &factors) + self.rng.random_range(40.0..160.0));
            let output = self.rng.random_range(18..60);
            let usage = self.llm(output);
            at += call_ms;
            let model = self.tenant.model.clone();
            self.push(
                at as u64,
                Action::Decide(
                    Decision::new(DecisionType::LlmCall, model, "choose the next step").duration_ms(call_ms).usage(usage),
                ),
            );
            let took = self.draw(Part::Tool, &factors);
            at += took;
            let confidence = round(self.rng.random_range(0.8..0.99));
            self.push(
                at as u64,
                Action::Decide(
                    Decision::new(DecisionType::ToolCall, tool, "look up the customer's account")
                        .confidence(confidence)
                        .duration_ms(took),
                ),
            );
            self.history_tokens += self.rng.random_range(150..600);
            tool_ms = Some(took);
            before += call_ms + took;
        }
        for (error_type, message) in errors {
            self.push(at as u64, Action::Error { error_type, message });
            let retry = if voice { self.rng.random_range(300.0..1200.0) } else { self.rng.random_range(500.0..3000.0) };
            at += retry;
            before += retry;
        }
        let output = tokens(text) + self.rng.random_range(2..12);
        let usage = self.llm(output);
        let mut turn = self.agent_turn(text);
        let (start, spoken, overlap) = if voice {
            let ttft = self.draw(Part::LlmTtft, &factors);
            let tts = self.draw(Part::TtsTtfb, &factors);
            let overhead = self.rng.random_range(10.0..60.0);
            let response = round(stt + eou + before + ttft + tts + overhead);
            let start = t_end + response.ceil() as u64;
            let full = self.speak(text);
            let (spoken, overlap) = if self.rng.random_bool(self.model.barge_in) {
                let said = round(full * self.rng.random_range(0.3..0.8));
                let overlap = round(self.rng.random_range(150.0..900.0_f64).min(said));
                turn = turn.interrupted_by(TurnSpeaker::Customer, Some(overlap));
                (said, Some(overlap))
            } else {
                (full, None)
            };
            turn = turn.latency(TurnLatency {
                stt_ms: Some(stt),
                end_of_utterance_ms: Some(eou),
                llm_ttft_ms: Some(ttft),
                tts_ttfb_ms: Some(tts),
                tool_ms,
                response_ms: Some(response),
                ..TurnLatency::default()
            });
            turn = turn.duration_ms(spoken);
            let telephony = self.telephony(start + spoken as u64);
            let chars = text.chars().count() as u64;
            turn = turn.usage(usage.tts_characters(chars).telephony_seconds(telephony));
            (start, spoken as u64, overlap)
        } else {
            let start = at as u64 + self.rng.random_range(800..4000);
            turn = turn.usage(usage);
            (start, 0, None)
        };
        self.history_tokens += tokens(text);
        self.push(start, Action::Turn(turn));
        (start, spoken, overlap)
    }

    /// A customer turn at `t`; returns when it ends.
    fn customer(&mut self, t: u64, mut turn: Interaction) -> u64 {
        let spoken = self.speak(&turn.content.clone());
        self.history_tokens += tokens(&turn.content);
        if self.voice() {
            let telephony = self.telephony(t + spoken as u64);
            turn = turn.duration_ms(spoken).usage(Usage::default().stt_seconds(round(spoken / 1000.0)).telephony_seconds(telephony));
        }
        self.push(t, Action::Turn(turn));
        t + spoken as u64
    }
}

/// The script of conversation `index` of a run with `seed`, starting `start_ms` after the
/// run's first arrival (incidents apply by that clock); pauses are capped at `max_gap_ms`.
pub fn generate(model: &Model, seed: u64, index: u64, run_id: &str, start_ms: u64, max_gap_ms: Option<u64>) -> Script {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index + 1);
    let tenant = &model.tenants[choose(&mut rng, &model.tenant_weights)];
    let agent = pick(&mut rng, &tenant.agents).as_str();
    let at_start = model.active(start_ms, &tenant.id, agent);
    let mut hits: BTreeMap<usize, Hit> = at_start.iter().map(|i| (*i, Hit::default())).collect();
    // An incident's intent shift, else the tenant's usual mix.
    let mut shifted = None;
    if let Some(i) = at_start.iter().copied().find(|i| !model.incidents[*i].intents.is_empty()) {
        shifted = partial(&mut rng, &model.incidents[i].intents);
        if shifted.is_some() {
            hits.entry(i).or_default().intent_shifted = true;
        }
    }
    let intent = &INTENTS[shifted.unwrap_or_else(|| choose(&mut rng, &tenant.intents))];
    let channel = choose(&mut rng, &model.channels);
    let language = weighted(&mut rng, &[("en-US", 70), ("es-US", 15), ("en-GB", 10), ("de-DE", 5)]);
    let customer = format!("cust-{:05}", rng.random_range(0..50_000));
    let system_tokens = rng.random_range(600..1400);
    let mut g = Gen {
        rng,
        model,
        tenant,
        agent,
        channel,
        start_ms,
        max_gap_ms,
        steps: Vec::new(),
        hits,
        system_tokens,
        history_tokens: 0,
        previous_input: 0,
        last_end: 0,
    };
    g.push(
        0,
        Action::Start(
            ConversationStart::new(tenant.id.clone(), agent, customer, channel)
                .language(language)
                .meta(super::RUN_METADATA_KEY, run_id)
                .meta("queue", intent.queue),
        ),
    );

    // The greeting: on voice, its latency is from the call's start to its first audio.
    let greeting = format!("Hi, you've reached {}. I'm the virtual assistant; how can I help you today?", tenant.name);
    let mut turn = g.agent_turn(&greeting);
    g.history_tokens += tokens(&greeting);
    let mut t: u64 = 300;
    if g.voice() {
        let (factors, _) = g.incidents_at(0);
        let greeting_ms = g.draw(Part::Greeting, &factors);
        t = greeting_ms.ceil() as u64;
        let spoken = g.speak(&greeting);
        let telephony = g.telephony(t + spoken as u64);
        let chars = greeting.chars().count() as u64;
        turn = turn
            .latency(TurnLatency { greeting_ms: Some(greeting_ms), ..TurnLatency::default() })
            .duration_ms(spoken)
            .usage(Usage::default().tts_characters(chars).telephony_seconds(telephony));
        g.push(t, Action::Turn(turn));
        t += spoken as u64;
    } else {
        g.push(t, Action::Turn(turn));
    }
    t += g.think();

    // The problem.
    let mut mood = (intent.mood + g.rng.random_range(-0.25..0.25)).clamp(-1.0, 1.0);
    let opening = *pick(&mut g.rng, intent.opening);
    let confidence = round(g.rng.random_range(0.72..0.99));
    // Personal data, from a stream of its own (the rest of the script is the same with or
    // without it): sometimes the customer reads out a card number, an email, a phone number or
    // a date of birth with the problem.
    let mut pii = ChaCha8Rng::seed_from_u64(seed ^ PII_SEED);
    pii.set_stream(index + 1);
    let (said, planted) = personal_data(&mut pii, opening);
    let opening_step = g.steps.len();
    let mut t_end =
        g.customer(t, Interaction::customer(said).sentiment(round(mood)).intent(intent.name, confidence));
    g.steps[opening_step].planted = planted;
    let decided = t_end + g.rng.random_range(80..300);
    let took = round(g.rng.random_range(60.0..200.0));
    g.push(
        decided,
        Action::Decide(
            Decision::new(DecisionType::IntentDetection, intent.name, "classified from the customer's first statement")
                .confidence(confidence)
                .duration_ms(took),
        ),
    );

    // The outcome: an incident's, else the usual mix.
    let mut forced = None;
    if let Some(i) = at_start.iter().copied().find(|i| !model.incidents[*i].resolution.is_empty()) {
        forced = partial(&mut g.rng, &model.incidents[i].resolution);
        if forced.is_some() {
            g.hits.entry(i).or_default().resolution_forced = true;
        }
    }
    let outcome = forced.unwrap_or_else(|| {
        weighted(
            &mut g.rng,
            &[
                (Resolution::Resolved, 62),
                (Resolution::Transferred, 14),
                (Resolution::Escalated, 6),
                (Resolution::Unresolved, 8),
                (Resolution::Abandoned, 10),
            ],
        )
    });
    // A resolved conversation goes through the whole flow; the others stop before its
    // resolving exchange.
    let exchanges = match outcome {
        Resolution::Resolved => intent.flow.len(),
        _ => g.rng.random_range(1..intent.flow.len()),
    };
    let error_at = g.rng.random_bool(0.05).then(|| g.rng.random_range(0..exchanges));
    let violation_at = g.rng.random_bool(0.03).then(|| g.rng.random_range(0..exchanges));
    for k in 0..exchanges {
        let tool = (k == 0 || g.rng.random_bool(0.3)).then_some(intent.tool);
        let (reply, answer) = intent.flow[k];
        let (start, spoken, overlap) = g.answer(t_end, reply, tool, error_at == Some(k));
        if violation_at == Some(k) {
            let policy = tenant.policy.clone();
            let severity = if g.rng.random_bool(0.5) { "medium" } else { "high" };
            g.push(
                start + spoken,
                Action::Violation {
                    policy,
                    severity,
                    description: "agent turn breached the tenant's compliance policy",
                },
            );
        }
        if outcome == Resolution::Abandoned && k + 1 == exchanges {
            t_end = start + spoken;
            break; // the customer never answers
        }
        // After a barge-in the customer starts before the agent is done.
        let t = match overlap {
            Some(overlap) => start + spoken - overlap as u64,
            None => start + spoken + g.think(),
        };
        mood = (mood + if outcome == Resolution::Resolved { 0.2 } else { -0.1 }).clamp(-1.0, 1.0);
        t_end = g.customer(t, Interaction::customer(answer).sentiment(round(mood)));
    }

    let end = match outcome {
        Resolution::Resolved => {
            let (start, spoken, _) = g.answer(t_end, "Glad I could help. Is there anything else?", None, false);
            let t = start + spoken + g.think();
            let t = g.customer(t, Interaction::customer("No, that's all. Thanks!").sentiment(round((mood + 0.3).min(1.0))));
            g.push(t + 400, Action::End(ConversationEnd::new(outcome)));
            ConversationEnd::new(outcome).rating(weighted(&mut g.rng, &[(5, 55), (4, 35), (3, 10)])).tag(intent.name)
        }
        Resolution::Transferred => {
            let decided = t_end + g.rng.random_range(150..400);
            let confidence = round(g.rng.random_range(0.6..0.95));
            let took = round(g.rng.random_range(100.0..400.0));
            g.push(
                decided,
                Action::Decide(
                    Decision::transfer(intent.queue, "needs a human specialist").confidence(confidence).duration_ms(took),
                ),
            );
            let (start, spoken, _) =
                g.answer(t_end, "I'm connecting you with a specialist now. Please hold.", None, false);
            let hold = g.rng.random_range(1000..4000);
            g.push(start + spoken + hold, Action::End(ConversationEnd::new(outcome)));
            let end = ConversationEnd::new(outcome).tag(intent.name).tag("handoff");
            if g.rng.random_bool(0.5) { end.rating(weighted(&mut g.rng, &[(4, 40), (3, 40), (2, 20)])) } else { end }
        }
        Resolution::Escalated => {
            let decided = t_end + g.rng.random_range(150..400);
            let confidence = round(g.rng.random_range(0.7..0.99));
            g.push(
                decided,
                Action::Decide(
                    Decision::new(DecisionType::Escalation, "supervisor", "customer asked for a supervisor")
                        .confidence(confidence),
                ),
            );
            let (start, spoken, _) =
                g.answer(t_end, "I've escalated this to a supervisor who will call you back today.", None, false);
            g.push(start + spoken + 1500, Action::End(ConversationEnd::new(outcome)));
            ConversationEnd::new(outcome).rating(weighted(&mut g.rng, &[(3, 40), (2, 40), (1, 20)])).tag(intent.name)
        }
        Resolution::Unresolved => {
            let (start, spoken, _) = g.answer(t_end, "I'm sorry, I wasn't able to solve this today.", None, false);
            g.push(start + spoken + 1200, Action::End(ConversationEnd::new(outcome)));
            ConversationEnd::new(outcome).rating(weighted(&mut g.rng, &[(1, 50), (2, 40), (3, 10)])).tag(intent.name)
        }
        _ => {
            // Abandoned: the customer left; the session times out after a while.
            let t = t_end + g.rng.random_range(20_000..60_000);
            g.push(t, Action::End(ConversationEnd::new(Resolution::Abandoned)));
            ConversationEnd::new(Resolution::Abandoned).tag(intent.name)
        }
    };
    // The placeholder end pushed above takes its final form (rating and tags).
    let last = g.steps.last_mut().expect("the end");
    last.action = Action::End(end);
    debug_assert!(
        matches!(&g.steps[opening_step].action, Action::Turn(turn) if turn.speaker == TurnSpeaker::Customer)
    );
    Script { steps: g.steps, hits: g.hits }
}


#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        Model::new(&Scenario::built_in())
    }

    fn script(model: &Model, seed: u64, i: u64) -> Vec<Step> {
        generate(model, seed, i, "run", 0, None).steps
    }

    #[test]
    fn same_seed_same_script_and_offsets_never_go_back() {
        let m = model();
        for i in 0..50 {
            let a = script(&m, 7, i);
            assert_eq!(a, script(&m, 7, i));
            assert!(a.windows(2).all(|w| w[0].offset_ms <= w[1].offset_ms), "script {i} goes back in time");
            assert!(matches!(a.first().unwrap().action, Action::Start(_)));
            assert!(matches!(a.last().unwrap().action, Action::End(_)));
        }
        assert_ne!(script(&m, 7, 0), script(&m, 8, 0));
    }

    fn turns(steps: &[Step]) -> Vec<&Interaction> {
        steps.iter().filter_map(|s| if let Action::Turn(t) = &s.action { Some(t) } else { None }).collect()
    }

    // Regression test for issue 12, item 12: a conversation repeated "Morning works better for
    // me." three times, and the agent sent a reset link before the customer confirmed the
    // address.
    #[test]
    fn conversations_follow_their_intents_flow_without_repeating_a_line() {
        let m = model();
        for i in 0..500 {
            let steps = script(&m, 7, i);
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
        let m = model();
        let mut with_latency = 0;
        for i in 0..300 {
            let steps = script(&m, 7, i);
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
                        if turn.latency.is_some_and(|l| l.response_ms.is_some()) {
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
            .map(|offset_ms| Step {
                offset_ms,
                action: Action::Error { error_type: "x".into(), message: "y".into() },
                planted: Vec::new(),
            })
            .collect();
        cap_gaps(&mut steps, 60_000);
        assert_eq!(steps.iter().map(|s| s.offset_ms).collect::<Vec<_>>(), vec![0, 1_000, 61_000, 62_000]);
    }
}

#[cfg(test)]
mod scenario_tests {
    use super::*;

    fn turns(steps: &[Step]) -> impl Iterator<Item = &Interaction> {
        steps.iter().filter_map(|s| if let Action::Turn(t) = &s.action { Some(t) } else { None })
    }

    #[test]
    fn a_voice_answer_takes_at_least_the_sum_of_its_parts_and_carries_usage() {
        let m = Model::new(&Scenario::built_in());
        let (mut answers, mut barge_ins, mut tools) = (0, 0, 0);
        for i in 0..400 {
            let steps = generate(&m, 3, i, "run", 0, None).steps;
            for turn in turns(&steps).filter(|t| t.speaker == TurnSpeaker::Agent) {
                let Some(l) = turn.latency.filter(|l| l.response_ms.is_some()) else { continue };
                let usage = turn.usage.as_ref().expect("every voice answer carries usage");
                answers += 1;
                let parts = [l.stt_ms, l.end_of_utterance_ms, l.llm_ttft_ms, l.tts_ttfb_ms, l.tool_ms];
                let sum: f64 = parts.iter().flatten().sum();
                assert!(l.response_ms.unwrap() >= sum, "script {i}: {l:?}");
                assert!(usage.input_tokens.unwrap() > 500 && usage.output_tokens.unwrap() > 4, "{usage:?}");
                assert!(usage.tts_characters.is_some() && usage.telephony_seconds.is_some(), "{usage:?}");
                barge_ins += usize::from(turn.interruption.is_some());
                tools += usize::from(l.tool_ms.is_some());
            }
        }
        assert!(answers > 500 && barge_ins > 10 && tools > 100, "{answers} answers, {barge_ins} barge-ins, {tools} tools");
    }

    #[test]
    fn incidents_change_what_they_say_inside_their_window_only() {
        let text = "duration: 2h\nconversations_per_hour: 600\ntenants:\n  - {id: a, share: 1, agents: [a1]}\nchannels: {voice: 1}\nincidents:\n  - {name: slow, start: 30m, duration: 30m, effect: {latency_ms: {llm_ttft: x4}, resolution: {transferred: 1}}}\n";
        let s = Scenario::parse(text, std::path::Path::new("t.yaml")).unwrap();
        let m = Model::new(&s);
        let ttft = |start_ms: u64| -> (Vec<f64>, usize) {
            let mut values = Vec::new();
            let mut transferred = 0;
            for i in 0..200 {
                let script = generate(&m, 1, i, "run", start_ms, None);
                values.extend(turns(&script.steps).filter_map(|t| t.latency.and_then(|l| l.llm_ttft_ms)));
                if let Some(Step { action: Action::End(end), .. }) = script.steps.last() {
                    transferred += usize::from(end.resolution == Resolution::Transferred);
                }
            }
            values.sort_by(f64::total_cmp);
            (values, transferred)
        };
        let (outside, transferred_outside) = ttft(5 * 60_000);
        let (inside, transferred_inside) = ttft(40 * 60_000);
        let ratio = inside[inside.len() / 2] / outside[outside.len() / 2];
        assert!((3.0..5.5).contains(&ratio), "p50 ratio {ratio}");
        assert_eq!(transferred_inside, 200);
        assert!(transferred_outside < 100, "{transferred_outside}");
    }
}
