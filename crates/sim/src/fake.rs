//! Deterministic, realistic-looking French personal and banking data. Everything is drawn from the
//! RNG it is given, so the same seed gives the same data; nothing depends on the clock.

use rand::Rng;
use rand::rngs::StdRng;

/// All generated dates sit before this instant (2025-01-01T00:00:00Z), so data is reproducible.
pub(crate) const BASE_TS: i64 = 1_735_689_600;
const DAY: i64 = 86_400;

const MALE: &[&str] = &[
    "Jean",
    "Pierre",
    "Michel",
    "André",
    "Philippe",
    "Nicolas",
    "Julien",
    "Thomas",
    "Antoine",
    "Lucas",
    "Hugo",
    "Louis",
    "Mathieu",
    "Alexandre",
    "François",
    "Olivier",
    "Laurent",
    "Stéphane",
    "Sébastien",
    "Guillaume",
    "Maxime",
    "Romain",
    "Vincent",
    "Christophe",
    "Théo",
    "Gabriel",
    "Arthur",
    "Raphaël",
    "Jules",
    "Léo",
];
const FEMALE: &[&str] = &[
    "Marie",
    "Nathalie",
    "Isabelle",
    "Sylvie",
    "Catherine",
    "Sophie",
    "Julie",
    "Camille",
    "Léa",
    "Manon",
    "Chloé",
    "Emma",
    "Inès",
    "Sarah",
    "Laura",
    "Céline",
    "Aurélie",
    "Émilie",
    "Claire",
    "Anne",
    "Hélène",
    "Valérie",
    "Élodie",
    "Margaux",
    "Juliette",
    "Louise",
    "Alice",
    "Zoé",
    "Jade",
    "Lina",
];
const LAST: &[&str] = &[
    "Martin",
    "Bernard",
    "Thomas",
    "Petit",
    "Robert",
    "Richard",
    "Durand",
    "Dubois",
    "Moreau",
    "Laurent",
    "Simon",
    "Michel",
    "Lefèvre",
    "Leroy",
    "Roux",
    "David",
    "Bertrand",
    "Morel",
    "Fournier",
    "Girard",
    "Bonnet",
    "Dupont",
    "Lambert",
    "Fontaine",
    "Rousseau",
    "Vincent",
    "Muller",
    "Lefebvre",
    "Faure",
    "André",
    "Mercier",
    "Blanc",
    "Guérin",
    "Boyer",
    "Garnier",
    "Chevalier",
    "François",
    "Legrand",
    "Gauthier",
    "Garcia",
    "Perrin",
    "Robin",
    "Clément",
    "Morin",
    "Nicolas",
    "Henry",
    "Roussel",
    "Mathieu",
    "Gautier",
    "Masson",
];
// Reserved example domains (RFC 2606 / 6761): the addresses can never reach a real person.
const DOMAINS: &[&str] = &[
    "example.com",
    "example.net",
    "example.org",
    "mail.example",
    "courriel.test",
];

/// (provider id, bank name, French bank code).
pub(crate) const BANKS: &[(&str, &str, u32)] = &[
    ("119", "HSBC", 30056),
    ("2", "BNP Paribas", 30004),
    ("3", "Société Générale", 30003),
    ("4", "Crédit Agricole", 18206),
    ("5", "LCL", 30002),
    ("6", "Caisse d'Épargne", 17515),
    ("7", "Banque Populaire", 10207),
    ("8", "Crédit Mutuel", 10278),
    ("9", "La Banque Postale", 20041),
    ("10", "Boursorama", 40618),
    ("11", "CIC", 30066),
    ("12", "ING", 30438),
];

/// (type, product name, balance range in cents).
const PRODUCTS: &[(&str, &str, i64, i64)] = &[
    ("CHECKINGS", "Compte Courant", -50_000, 500_000),
    ("CHECKINGS", "Compte Bancaire", -20_000, 300_000),
    ("SAVINGS", "Livret A", 0, 2_295_000),
    ("SAVINGS", "Livret Dévelop. Durable", 0, 1_200_000),
    ("SAVINGS", "Plan Épargne Logement", 22_500, 6_100_000),
    ("CREDIT_CARD", "Carte Visa Premier", -250_000, 0),
    ("LOAN", "Prêt Immobilier", -25_000_000, -500_000),
];

const LABELS: &[(&str, i64, i64)] = &[
    ("CB CARREFOUR MARKET", -15_000, -800),
    ("CB MONOPRIX", -9_000, -400),
    ("CB BOULANGERIE PAUL", -1_500, -120),
    ("CB SNCF INTERNET", -18_000, -1_500),
    ("CB AMAZON EU SARL", -20_000, -900),
    ("CB TOTALENERGIES", -9_000, -2_000),
    ("PRLV SEPA EDF", -16_000, -3_000),
    ("PRLV SEPA FREE MOBILE", -2_999, -999),
    ("PRLV SEPA MAIF", -9_000, -2_500),
    ("RETRAIT DAB", -20_000, -2_000),
    ("VIR SEPA SALAIRE", 150_000, 420_000),
    ("VIR INSTANTANE RECU", 1_000, 50_000),
];

pub(crate) struct Person {
    pub first_name: String,
    pub last_name: String,
    pub gender: &'static str,
    pub birthdate: String,
    pub postcode: String,
    pub creation_date: i64,
    pub email_verified: bool,
}

pub(crate) fn person(rng: &mut StdRng) -> Person {
    let female = rng.random_bool(0.5);
    let first = if female {
        FEMALE[rng.random_range(0..FEMALE.len())]
    } else {
        MALE[rng.random_range(0..MALE.len())]
    };
    let last = LAST[rng.random_range(0..LAST.len())];
    let birth = BASE_TS - rng.random_range(18 * 365..80 * 365) * DAY;
    let birthdate = chrono::DateTime::from_timestamp(birth, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1980-01-01".into());
    let dept = loop {
        let d = rng.random_range(1..=95);
        if d != 20 {
            break d;
        }
    };
    let postcode = if dept == 75 {
        format!("750{:02}", rng.random_range(1..=20))
    } else {
        format!("{dept:02}{:03}", rng.random_range(0..100) * 10)
    };
    Person {
        first_name: first.to_string(),
        last_name: last.to_string(),
        gender: if female { "FEMALE" } else { "MALE" },
        birthdate,
        postcode,
        creation_date: BASE_TS - rng.random_range(30..3 * 365) * DAY - rng.random_range(0..DAY),
        email_verified: rng.random_bool(0.85),
    }
}

fn ascii_lower(s: &str) -> String {
    s.chars()
        .filter_map(|c| {
            let c = match c {
                'à' | 'â' | 'ä' | 'À' | 'Â' => 'a',
                'é' | 'è' | 'ê' | 'ë' | 'É' | 'È' => 'e',
                'î' | 'ï' => 'i',
                'ô' | 'ö' => 'o',
                'ù' | 'û' | 'ü' => 'u',
                'ç' => 'c',
                c => c,
            };
            match c {
                c if c.is_ascii_alphanumeric() => Some(c.to_ascii_lowercase()),
                '-' | '.' => Some(c),
                _ => None,
            }
        })
        .collect()
}

/// An e-mail for the person; `taken` says whether an address is already used.
pub(crate) fn email(rng: &mut StdRng, p: &Person, taken: impl Fn(&str) -> bool) -> String {
    let first = ascii_lower(&p.first_name);
    let last = ascii_lower(&p.last_name);
    let domain = DOMAINS[rng.random_range(0..DOMAINS.len())];
    let mut max = 100u64;
    loop {
        let n = rng.random_range(1..max);
        let e = match rng.random_range(0..3) {
            0 => format!("{first}.{last}{n}@{domain}"),
            1 => format!("{}{last}{n}@{domain}", &first[..1]),
            _ => format!("{first}-{last}.{n}@{domain}"),
        };
        if !taken(&e) {
            return e;
        }
        max = max.saturating_mul(10);
    }
}

/// The template of an account as the bank holds it.
#[derive(Debug, Clone)]
pub(crate) struct BankProduct {
    pub name: String,
    pub reference: String,
    pub account_number: String,
    pub iban: String,
    pub balance: f64,
    pub kind: &'static str,
    pub currency: &'static str,
}

/// `n mod 97` of a string of decimal digits.
fn mod97(digits: &str) -> u32 {
    digits
        .bytes()
        .fold(0u32, |acc, d| (acc * 10 + u32::from(d - b'0')) % 97)
}

/// The French RIB key of bank code, branch code and account number (all digits).
pub(crate) fn rib_key(bank: u32, branch: u32, account: u64) -> u32 {
    let sum = 89 * u64::from(bank) + 15 * u64::from(branch) + 3 * account;
    97 - (sum % 97) as u32
}

/// A valid French IBAN (compact form) for the given RIB parts.
pub(crate) fn iban(bank: u32, branch: u32, account: u64) -> String {
    let bban = format!(
        "{bank:05}{branch:05}{account:011}{:02}",
        rib_key(bank, branch, account)
    );
    // "FR00" moved to the end, letters as numbers: F = 15, R = 27.
    let check = 98 - mod97(&format!("{bban}152700"));
    format!("FR{check:02}{bban}")
}

pub(crate) fn product(rng: &mut StdRng, bank_code: u32) -> BankProduct {
    let (kind, base, lo, hi) = PRODUCTS[rng.random_range(0..PRODUCTS.len())];
    let branch = rng.random_range(1..100_000u32);
    let account = rng.random_range(1_000_000_000u64..100_000_000_000);
    let account_number = format!("{account:011}");
    BankProduct {
        name: format!("{base} (x{})", &account_number[7..]),
        reference: format!("{branch:05} {account_number}"),
        account_number,
        iban: iban(bank_code, branch, account),
        balance: rng.random_range(lo..=hi) as f64 / 100.0,
        kind,
        currency: "EUR",
    }
}

/// One bank transaction: (label, amount, date).
pub(crate) fn transaction(rng: &mut StdRng) -> (&'static str, f64, i64) {
    let (label, lo, hi) = LABELS[rng.random_range(0..LABELS.len())];
    let amount = rng.random_range(lo..=hi) as f64 / 100.0;
    let date = BASE_TS - rng.random_range(1..180) * DAY;
    (label, amount, date)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_iban_and_rib() {
        // A RIB (bank, branch, account, key) read as one number is a multiple of 97.
        let key = rib_key(30002, 550, 15784121);
        assert_eq!(mod97(&format!("3000200550{:011}{key:02}", 15784121u64)), 0);
        let i = iban(30004, 1234, 12345678901);
        assert_eq!(i.len(), 27);
        let rearranged = format!("{}1527{}", &i[4..], &i[2..4]);
        assert_eq!(mod97(&rearranged), 1);
        assert_eq!(ascii_lower("Émilie Lefèvre"), "emilielefevre");
    }
}
