//! Deterministic generation of realistic tenants: names in several scripts, every phone and address field,
//! departments with managers, disabled accounts, guests, shared mailboxes, users without a mailbox, people hidden from
//! the GAL, mailboxes that are not REST-enabled, tiny real JPEG photos, and groups (one nested).

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::jpeg::tiny_jpeg;
use crate::model::Group;
use crate::model::user::{MailboxKind, User};

/// How to seed one tenant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TenantSeed {
    /// Short name: the initial domain is `{name}.onmicrosoft.com`, the mail domain `{name}.example`.
    pub name: String,
    /// Number of directory users (members, guests, shared mailboxes, unlicensed … all counted).
    pub users: usize,
    /// Personal contacts the owner made by hand in each mailbox's default folder (not galbridge's).
    pub user_contacts_per_mailbox: usize,
    /// Fraction of users that have a photo.
    pub photo_rate: f64,
}

impl TenantSeed {
    pub fn new(name: &str, users: usize) -> Self {
        TenantSeed {
            name: name.to_string(),
            users,
            ..TenantSeed::default()
        }
    }
}

impl Default for TenantSeed {
    fn default() -> Self {
        TenantSeed {
            name: "contoso".into(),
            users: 50,
            user_contacts_per_mailbox: 0,
            photo_rate: 0.6,
        }
    }
}

/// (native given, native surname, latin given, latin surname) per script.
/// A name written natively and in Latin letters (for mail aliases).
type Spelled = (&'static str, &'static str);

const NAMES: &[(&[Spelled], &[Spelled])] = &[
    (
        &[
            ("Ada", "ada"),
            ("Grace", "grace"),
            ("Alan", "alan"),
            ("Margaret", "margaret"),
            ("Linus", "linus"),
            ("Barbara", "barbara"),
            ("Ken", "ken"),
            ("Frances", "frances"),
        ],
        &[
            ("Lovelace", "lovelace"),
            ("Hopper", "hopper"),
            ("Turing", "turing"),
            ("Hamilton", "hamilton"),
            ("Liskov", "liskov"),
            ("Thompson", "thompson"),
            ("Allen", "allen"),
        ],
    ),
    (
        &[
            ("Jürgen", "juergen"),
            ("Zoë", "zoe"),
            ("François", "francois"),
            ("Łucja", "lucja"),
            ("Søren", "soren"),
            ("José", "jose"),
            ("Ångström", "angstrom"),
        ],
        &[
            ("Müller", "mueller"),
            ("Gaßner", "gassner"),
            ("Lefèvre", "lefevre"),
            ("Wałęsa", "walesa"),
            ("Kierkegaard", "kierkegaard"),
            ("Núñez", "nunez"),
            ("O'Brien", "obrien"),
        ],
    ),
    (
        &[
            ("Дмитрий", "dmitry"),
            ("Анна", "anna"),
            ("Сергей", "sergey"),
            ("Ольга", "olga"),
        ],
        &[
            ("Иванов", "ivanov"),
            ("Смирнова", "smirnova"),
            ("Кузнецов", "kuznetsov"),
            ("Попова", "popova"),
        ],
    ),
    (
        &[("Νίκος", "nikos"), ("Ελένη", "eleni")],
        &[("Παπαδόπουλος", "papadopoulos"), ("Γεωργίου", "georgiou")],
    ),
    (
        &[("太郎", "taro"), ("花子", "hanako"), ("健", "ken")],
        &[("山田", "yamada"), ("佐藤", "sato"), ("鈴木", "suzuki")],
    ),
    (
        &[("伟", "wei"), ("芳", "fang"), ("静", "jing")],
        &[("王", "wang"), ("李", "li"), ("张", "zhang")],
    ),
    (
        &[("محمد", "mohammed"), ("فاطمة", "fatima")],
        &[("العلي", "alali"), ("حداد", "haddad")],
    ),
    (
        &[("דוד", "david"), ("שרה", "sarah")],
        &[("כהן", "cohen"), ("לוי", "levi")],
    ),
    (
        &[("민준", "minjun"), ("서연", "seoyeon")],
        &[("김", "kim"), ("박", "park")],
    ),
    (
        &[("अर्जुन", "arjun"), ("प्रिया", "priya")],
        &[("शर्मा", "sharma"), ("पटेल", "patel")],
    ),
];

const DEPARTMENTS: &[&str] = &[
    "Engineering",
    "Sales",
    "Marketing",
    "Finance",
    "Human Resources",
    "Operations",
    "Legal",
    "Support",
];
const TITLES: &[&str] = &[
    "Engineer",
    "Senior Engineer",
    "Account Executive",
    "Analyst",
    "Manager",
    "Director",
    "Specialist",
    "Coordinator",
];
const CITIES: &[(&str, &str, &str, &str, &str)] = &[
    ("Seattle", "WA", "98101", "United States", "US"),
    ("München", "Bayern", "80331", "Germany", "DE"),
    ("Paris", "Île-de-France", "75001", "France", "FR"),
    ("東京", "東京都", "100-0001", "Japan", "JP"),
    ("Zürich", "ZH", "8001", "Switzerland", "CH"),
    ("São Paulo", "SP", "01000-000", "Brazil", "BR"),
];

/// A generated tenant's directory content.
pub(crate) struct SeededTenant {
    pub(crate) tenant_id: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) users: Vec<User>,
    pub(crate) groups: Vec<Group>,
}

pub(crate) fn uuid_from(rng: &mut StdRng) -> String {
    let bytes: [u8; 16] = rng.random();
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

pub(crate) fn generate(seed: u64, tenant_index: usize, spec: &TenantSeed) -> SeededTenant {
    let mut rng = StdRng::seed_from_u64(
        seed ^ ((tenant_index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
    );
    let tenant_id = uuid_from(&mut rng);
    let client_id = uuid_from(&mut rng);
    let secret_bytes: [u8; 24] = rng.random();
    let client_secret = format!("sim~{}", hex::encode(secret_bytes));
    let mail_domain = format!("{}.example", spec.name);
    let initial_domain = format!("{}.onmicrosoft.com", spec.name);
    let company = capitalise(&spec.name);

    let mut users: Vec<User> = Vec::with_capacity(spec.users);
    let mut dept_heads: Vec<Option<String>> = vec![None; DEPARTMENTS.len()];
    for i in 0..spec.users {
        let (givens, surnames) = NAMES[rng.random_range(0..NAMES.len())];
        let (given, given_latin) = givens[rng.random_range(0..givens.len())];
        let (surname, surname_latin) = surnames[rng.random_range(0..surnames.len())];
        let alias = format!("{given_latin}.{surname_latin}{i}");
        let dept_index = rng.random_range(0..DEPARTMENTS.len());
        let (city, state, postal, country, usage) = CITIES[rng.random_range(0..CITIES.len())];
        let roll: f64 = rng.random();
        let mut user = User {
            id: uuid_from(&mut rng),
            user_principal_name: format!("{alias}@{initial_domain}"),
            display_name: format!("{given} {surname}"),
            given_name: Some(given.to_string()),
            surname: Some(surname.to_string()),
            mail: Some(format!("{alias}@{mail_domain}")),
            mail_nickname: alias.clone(),
            other_mails: Vec::new(),
            proxy_addresses: vec![
                format!("SMTP:{alias}@{mail_domain}"),
                format!("smtp:{alias}@{initial_domain}"),
            ],
            job_title: Some(TITLES[rng.random_range(0..TITLES.len())].to_string()),
            department: Some(DEPARTMENTS[dept_index].to_string()),
            company_name: Some(company.clone()),
            office_location: Some(format!("{city} {}", rng.random_range(1..40))),
            business_phones: vec![format!("+1 425 555 {:04}", rng.random_range(0..10_000))],
            mobile_phone: Some(format!("+1 206 555 {:04}", rng.random_range(0..10_000))),
            fax_number: (rng.random::<f64>() < 0.2)
                .then(|| format!("+1 425 555 {:04}", rng.random_range(0..10_000))),
            street_address: Some(format!("{} Main Street", rng.random_range(1..999))),
            city: Some(city.to_string()),
            state: Some(state.to_string()),
            postal_code: Some(postal.to_string()),
            country: Some(country.to_string()),
            usage_location: Some(usage.to_string()),
            preferred_language: Some("en-US".into()),
            employee_id: Some(format!("{:06}", i + 1)),
            user_type: "Member".into(),
            account_enabled: true,
            created_date_time: seeded_creation_time(seed, tenant_index, i),
            extension_attributes: Default::default(),
            external_user_state: None,
            manager_id: dept_heads[dept_index].clone(),
            mailbox: MailboxKind::User,
            hidden_from_address_lists: false,
            rest_enabled: true,
            mail_user_from_ms: 0,
            photo: None,
        };
        // Every seventh person on average has some field left empty, as real directories do.
        if rng.random::<f64>() < 0.15 {
            user.mobile_phone = None;
            user.street_address = None;
        }
        match roll {
            r if r < 0.04 => {
                // Guest (B2B): external mail, #EXT# UPN, no mailbox here.
                user.user_type = "Guest".into();
                let ext = format!("{given_latin}.{surname_latin}{i}@partner.example");
                user.user_principal_name =
                    format!("{}#EXT#@{initial_domain}", ext.replace('@', "_"));
                user.mail = Some(ext.clone());
                user.proxy_addresses = vec![format!("SMTP:{ext}")];
                user.other_mails = vec![ext];
                user.mailbox = MailboxKind::None;
                user.external_user_state = Some("Accepted".into());
                user.company_name = Some("Partner".into());
            }
            r if r < 0.07 => {
                user.account_enabled = false;
            }
            r if r < 0.09 => {
                // Shared mailbox: a disabled account with a mailbox.
                user.mailbox = MailboxKind::Shared;
                user.account_enabled = false;
                user.display_name = format!(
                    "{} {}",
                    DEPARTMENTS[dept_index],
                    ["Desk", "Inbox", "Team"][i % 3]
                );
                user.given_name = None;
                user.surname = None;
                user.job_title = None;
            }
            r if r < 0.14 => {
                // Licensed for nothing that has a mailbox.
                user.mailbox = MailboxKind::None;
                user.mail = None;
                user.proxy_addresses.clear();
            }
            r if r < 0.16 => user.hidden_from_address_lists = true,
            r if r < 0.17 => user.rest_enabled = false,
            _ => {}
        }
        if user.mailbox != MailboxKind::None && rng.random::<f64>() < spec.photo_rate {
            let shade: u8 = rng.random();
            user.photo = Some(Arc::new(tiny_jpeg(shade, user.id.as_bytes())));
        }
        if dept_heads[dept_index].is_none()
            && user.user_type == "Member"
            && user.mailbox == MailboxKind::User
        {
            dept_heads[dept_index] = Some(user.id.clone());
            user.job_title = Some(format!("Head of {}", DEPARTMENTS[dept_index]));
        }
        users.push(user);
    }

    let mut groups = Vec::new();
    let all_id = uuid_from(&mut rng);
    groups.push(Group {
        id: all_id,
        display_name: "All Staff".into(),
        members: users
            .iter()
            .filter(|u| u.user_type == "Member")
            .map(|u| u.id.clone())
            .collect(),
        security_enabled: true,
        ..Group::default()
    });
    let mut dept_group_ids = Vec::new();
    for dept in DEPARTMENTS {
        let id = uuid_from(&mut rng);
        dept_group_ids.push(id.clone());
        groups.push(Group {
            id,
            display_name: format!("{dept} Team"),
            members: users
                .iter()
                .filter(|u| u.department.as_deref() == Some(dept))
                .map(|u| u.id.clone())
                .collect(),
            security_enabled: true,
            ..Group::default()
        });
    }
    // A nested group: Sales and Marketing teams as members.
    groups.push(Group {
        id: uuid_from(&mut rng),
        display_name: "Go To Market".into(),
        members: dept_group_ids[1..3].to_vec(),
        security_enabled: true,
        ..Group::default()
    });

    SeededTenant {
        tenant_id,
        client_id,
        client_secret,
        users,
        groups,
    }
}

fn capitalise(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
}

/// When a seeded person joined: a day between 2019-01-01 and 2023-12-31, derived from (seed, tenant, index) alone so
/// two simulators with the same seed serve identical people (the wall clock must not leak into seeded data) and the
/// main generator's sequence is left untouched.
fn seeded_creation_time(seed: u64, tenant_index: usize, user_index: usize) -> String {
    let mut mix = StdRng::seed_from_u64(
        seed ^ (tenant_index as u64).rotate_left(32)
            ^ (user_index as u64).wrapping_mul(0xA24B_AED4_963E_E407),
    );
    let base = chrono::NaiveDate::from_ymd_opt(2019, 1, 1).unwrap_or_default();
    let day = base + chrono::Days::new(mix.random_range(0..1826));
    let secs: u32 = mix.random_range(0..86_400);
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        day.format("%Y-%m-%d"),
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}
