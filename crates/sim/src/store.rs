//! The simulator's data: what the aggregator holds (users, connections, channels, accounts,
//! transactions, events) and, separately, what the bank holds (the accounts behind each channel),
//! which is what a `LIST_ACCOUNTS` synchronisation restores from.
//!
//! Fake data only (`sim::fake`), never a real person's.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Value, json};

use super::fake::{self, BANKS, BASE_TS, BankProduct};

/// The password of every simulated user (password grant).
pub const USER_PASSWORD: &str = "sim-password";

const DAY: i64 = 86_400;

/// An error answered as `{error, error_description}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, error: &'static str, description: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            description: description.into(),
            retry_after: None,
        }
    }
    pub fn not_found(what: &str, id: impl std::fmt::Display) -> Self {
        Self::new(404, "not_found", format!("{what} {id} not found"))
    }
    pub fn bad_request(description: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", description)
    }
    pub fn forbidden(description: impl Into<String>) -> Self {
        Self::new(403, "forbidden", description)
    }
    pub fn sync_in_progress(connection: u64) -> Self {
        Self::new(
            409,
            "sync_in_progress",
            format!("connection {connection} is synchronising; retry later"),
        )
    }
}

fn id_str<S: Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

#[derive(Debug, Clone, Serialize)]
pub struct Address {
    pub postcode: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct User {
    #[serde(serialize_with = "id_str")]
    pub id: u64,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub creation_date: i64,
    pub gender: &'static str,
    pub email_verified: bool,
    pub birthdate: String,
    pub address: Address,
    #[serde(skip)]
    pub connections: BTreeSet<u64>,
}

/// An account as the bank holds it, behind one channel of one connection.
#[derive(Debug, Clone)]
pub struct BankAccount {
    /// Stable key of the bank account (drives its transactions).
    pub key: u64,
    pub product: BankProduct,
    /// False once the bank closed it (`/_sim/bank/accounts/{id}/close`): reported MISSING.
    pub open: bool,
    /// The aggregator account currently associated with it, if any.
    pub linked: Option<u64>,
    /// Every aggregator id it ever had (so `/_sim/bank` accepts the id of a deleted account).
    pub history: Vec<u64>,
    pub transactions: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Channel {
    pub id: String,
    pub mode: &'static str,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    pub last_success_date: Option<i64>,
    pub last_end_date: Option<i64>,
    #[serde(skip)]
    pub bank: Vec<BankAccount>,
    /// How many of `bank` are associated (`linked`); 0 makes the channel EMPTY.
    #[serde(skip)]
    pub linked: usize,
}

impl Channel {
    pub fn is_empty(&self) -> bool {
        self.status == "EMPTY"
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Connection {
    #[serde(serialize_with = "id_str")]
    pub id: u64,
    #[serde(serialize_with = "id_str")]
    pub user_id: u64,
    pub provider_id: &'static str,
    pub name: &'static str,
    pub status: &'static str,
    pub creation_date: i64,
    pub auto_sync: bool,
    pub channels: Vec<Channel>,
    #[serde(skip)]
    pub accounts: BTreeSet<u64>,
    #[serde(skip)]
    pub bank_code: u32,
    #[serde(skip)]
    pub running: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Transaction {
    #[serde(serialize_with = "id_str")]
    pub id: u64,
    #[serde(serialize_with = "id_str")]
    pub account_id: u64,
    pub amount: f64,
    pub currency: &'static str,
    pub date: i64,
    pub label: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Account {
    #[serde(serialize_with = "id_str")]
    pub id: u64,
    #[serde(serialize_with = "id_str")]
    pub connection_id: u64,
    pub name: String,
    pub reference: String,
    pub account_number: String,
    pub iban: String,
    pub balance: f64,
    pub currency: &'static str,
    pub balance_date: i64,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub status: &'static str,
    pub last_channel_definition_id: String,
    #[serde(skip)]
    pub user_id: u64,
    #[serde(skip)]
    pub transactions: Vec<Transaction>,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub id: u64,
    pub body: Value,
}

/// `POST /_sim/seed` body. Knobs left out are drawn at random (deterministically).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeedRequest {
    /// How many users to create.
    pub users: usize,
    /// Connections per user (default 1..=2).
    pub connections_per_user: Option<usize>,
    /// Channels per connection (default 1..=2).
    pub channels_per_connection: Option<usize>,
    /// Accounts per channel (default 1..=3).
    pub accounts_per_channel: Option<usize>,
    /// Transactions per account (default 2..=6).
    pub transactions_per_account: Option<usize>,
}

impl SeedRequest {
    pub fn validate(&self) -> Result<(), String> {
        let check = |name: &str, v: Option<usize>, min: usize, max: usize| match v {
            Some(v) if v < min || v > max => Err(format!("{name} must be in {min}..={max}")),
            _ => Ok(()),
        };
        check("users", Some(self.users), 0, 1_000_000)?;
        check("connections_per_user", self.connections_per_user, 0, 50)?;
        check(
            "channels_per_connection",
            self.channels_per_connection,
            1,
            10,
        )?;
        check("accounts_per_channel", self.accounts_per_channel, 1, 200)?;
        check(
            "transactions_per_account",
            self.transactions_per_account,
            0,
            1000,
        )?;
        let accounts = self.users
            * self.connections_per_user.unwrap_or(2)
            * self.channels_per_connection.unwrap_or(2)
            * self.accounts_per_channel.unwrap_or(3);
        if accounts > 5_000_000 {
            return Err("that would create more than 5,000,000 accounts".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeededChannel {
    pub id: String,
    pub accounts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeededConnection {
    pub id: String,
    pub channels: Vec<SeededChannel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeededUser {
    pub id: String,
    pub email: String,
    pub connections: Vec<SeededConnection>,
}

/// `POST /_sim/seed` answer: the ids of everything created.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SeedResponse {
    pub users: Vec<SeededUser>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    ListAccounts,
    All,
}

/// Counts of what the aggregator holds (`GET /_sim/stats`).
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub users: usize,
    pub connections: usize,
    pub accounts: usize,
    pub transactions: usize,
    pub events: usize,
}

/// What a delete of an account took with it.
#[derive(Debug, Clone, Default)]
pub struct Cascade {
    pub channel_emptied: bool,
    pub connection_deleted: bool,
}

pub struct Store {
    seed: u64,
    rng: StdRng,
    next_id: u64,
    next_bank_key: u64,
    next_event_id: u64,
    pub users: BTreeMap<u64, User>,
    by_email: HashMap<String, u64>,
    pub connections: BTreeMap<u64, Connection>,
    pub accounts: BTreeMap<u64, Account>,
    /// Aggregator account id (current or past) -> (connection, channel index, bank index).
    bank_index: HashMap<u64, (u64, usize, usize)>,
    pub events: Vec<Event>,
    transactions: usize,
}

impl Store {
    pub fn new(seed: u64) -> Self {
        Store {
            seed,
            rng: StdRng::seed_from_u64(seed),
            next_id: 1000,
            next_bank_key: 1,
            next_event_id: 1,
            users: BTreeMap::new(),
            by_email: HashMap::new(),
            connections: BTreeMap::new(),
            accounts: BTreeMap::new(),
            bank_index: HashMap::new(),
            events: Vec::new(),
            transactions: 0,
        }
    }

    fn alloc(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn stats(&self) -> Stats {
        Stats {
            users: self.users.len(),
            connections: self.connections.len(),
            accounts: self.accounts.len(),
            transactions: self.transactions,
            events: self.events.len(),
        }
    }

    pub fn user_by_email(&self, email: &str) -> Option<u64> {
        self.by_email.get(email).copied()
    }

    /// The user owning a connection, if the connection exists.
    pub fn connection_owner(&self, id: u64) -> Option<u64> {
        self.connections.get(&id).map(|c| c.user_id)
    }

    /// Creates users with connections, channels, bank accounts, accounts and transactions.
    pub fn seed(&mut self, req: &SeedRequest) -> SeedResponse {
        let mut out = SeedResponse::default();
        for _ in 0..req.users {
            let person = fake::person(&mut self.rng);
            let by_email = &self.by_email;
            let email = fake::email(&mut self.rng, &person, |e| by_email.contains_key(e));
            let uid = self.alloc();
            self.by_email.insert(email.clone(), uid);
            self.users.insert(
                uid,
                User {
                    id: uid,
                    email: email.clone(),
                    first_name: person.first_name,
                    last_name: person.last_name,
                    creation_date: person.creation_date,
                    gender: person.gender,
                    email_verified: person.email_verified,
                    birthdate: person.birthdate,
                    address: Address {
                        postcode: person.postcode,
                    },
                    connections: BTreeSet::new(),
                },
            );
            let n_conn = req
                .connections_per_user
                .unwrap_or_else(|| self.rng.random_range(1..=2));
            let mut seeded = SeededUser {
                id: uid.to_string(),
                email,
                connections: Vec::new(),
            };
            for _ in 0..n_conn {
                seeded.connections.push(self.seed_connection(uid, req));
            }
            out.users.push(seeded);
        }
        out
    }

    fn seed_connection(&mut self, uid: u64, req: &SeedRequest) -> SeededConnection {
        let (provider_id, name, bank_code) = BANKS[self.rng.random_range(0..BANKS.len())];
        let cid = self.alloc();
        let creation_date = BASE_TS - self.rng.random_range(1..700) * DAY;
        let n_chan = req
            .channels_per_connection
            .unwrap_or_else(|| self.rng.random_range(1..=2));
        let mut channels = Vec::new();
        let (mut embedded, mut redirect) = (0, 0);
        for _ in 0..n_chan {
            let redirect_mode = self.rng.random_bool(0.5);
            let id = if redirect_mode {
                redirect += 1;
                format!("redirect{redirect}")
            } else {
                embedded += 1;
                format!("embedded{embedded}")
            };
            let last = BASE_TS - self.rng.random_range(0..30) * DAY;
            let n_acc = req
                .accounts_per_channel
                .unwrap_or_else(|| self.rng.random_range(1..=3));
            let mut bank = Vec::new();
            for _ in 0..n_acc {
                let product = fake::product(&mut self.rng, bank_code);
                let transactions = req
                    .transactions_per_account
                    .unwrap_or_else(|| self.rng.random_range(2..=6));
                let key = self.next_bank_key;
                self.next_bank_key += 1;
                bank.push(BankAccount {
                    key,
                    product,
                    open: true,
                    linked: None,
                    history: Vec::new(),
                    transactions,
                });
            }
            channels.push(Channel {
                id,
                mode: if redirect_mode {
                    "REDIRECT"
                } else {
                    "EMBEDDED"
                },
                status: "SUCCESS",
                expires: redirect_mode.then_some(BASE_TS + 90 * DAY),
                last_success_date: Some(last),
                last_end_date: Some(last),
                bank,
                linked: 0,
            });
        }
        self.connections.insert(
            cid,
            Connection {
                id: cid,
                user_id: uid,
                provider_id,
                name,
                status: "SUCCESS",
                creation_date,
                auto_sync: true,
                channels,
                accounts: BTreeSet::new(),
                bank_code,
                running: false,
            },
        );
        if let Some(u) = self.users.get_mut(&uid) {
            u.connections.insert(cid);
        }
        let mut seeded = SeededConnection {
            id: cid.to_string(),
            channels: Vec::new(),
        };
        for ci in 0..n_chan {
            let n_acc = self.connections[&cid].channels[ci].bank.len();
            let chan_id = self.connections[&cid].channels[ci].id.clone();
            let accounts = (0..n_acc)
                .map(|bi| self.link(cid, ci, bi, None, false).to_string())
                .collect();
            seeded.channels.push(SeededChannel {
                id: chan_id,
                accounts,
            });
        }
        seeded
    }

    /// Associates bank account `bi` of channel `ci` with an aggregator account; returns its id: a
    /// new one, or with `keep_id` the one it had last (if any). `now` is the balance date (None:
    /// the deterministic seed date).
    fn link(&mut self, cid: u64, ci: usize, bi: usize, now: Option<i64>, keep_id: bool) -> u64 {
        let former = self.connections[&cid].channels[ci].bank[bi]
            .history
            .last()
            .copied();
        let id = match former.filter(|_| keep_id) {
            Some(id) => id,
            None => self.alloc(),
        };
        let conn = self.connections.get_mut(&cid).expect("link: connection");
        let chan = &mut conn.channels[ci];
        chan.linked += 1;
        let ba = &mut chan.bank[bi];
        ba.linked = Some(id);
        if ba.history.last() != Some(&id) {
            ba.history.push(id);
        }
        // Transactions come from the bank: the same ones every time the account is (re)added.
        let mut rng = StdRng::seed_from_u64(self.seed ^ ba.key.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut transactions = Vec::with_capacity(ba.transactions);
        for _ in 0..ba.transactions {
            let (label, amount, date) = fake::transaction(&mut rng);
            self.next_id += 1;
            transactions.push(Transaction {
                id: self.next_id,
                account_id: id,
                amount,
                currency: "EUR",
                date,
                label,
                kind: if amount < 0.0 { "DEBIT" } else { "CREDIT" },
            });
        }
        self.transactions += transactions.len();
        let p = &ba.product;
        let account = Account {
            id,
            connection_id: cid,
            name: p.name.clone(),
            reference: p.reference.clone(),
            account_number: p.account_number.clone(),
            iban: p.iban.clone(),
            balance: p.balance,
            currency: p.currency,
            balance_date: now.unwrap_or(BASE_TS - DAY),
            kind: p.kind,
            status: "ACTIVE",
            last_channel_definition_id: chan.id.clone(),
            user_id: conn.user_id,
            transactions,
        };
        conn.accounts.insert(id);
        self.accounts.insert(id, account);
        self.bank_index.insert(id, (cid, ci, bi));
        id
    }

    fn remove_account_data(&mut self, id: u64) -> Option<Account> {
        let acc = self.accounts.remove(&id)?;
        self.transactions -= acc.transactions.len();
        Some(acc)
    }

    /// Removes a connection with its accounts and transactions (and the bank behind it, which is
    /// then unreachable: a deleted connection cannot be synchronised).
    fn remove_connection(&mut self, cid: u64) -> Option<Connection> {
        let conn = self.connections.remove(&cid)?;
        for aid in &conn.accounts {
            self.remove_account_data(*aid);
        }
        for ch in &conn.channels {
            for ba in &ch.bank {
                for h in &ba.history {
                    self.bank_index.remove(h);
                }
            }
        }
        if let Some(u) = self.users.get_mut(&conn.user_id) {
            u.connections.remove(&cid);
        }
        Some(conn)
    }

    /// `DELETE /users/{id}`: the user, its connections, accounts and transactions; the e-mail is
    /// free again. 409 while one of its connections synchronises.
    pub fn delete_user(&mut self, id: u64) -> Result<User, ApiError> {
        let user = self
            .users
            .get(&id)
            .ok_or_else(|| ApiError::not_found("user", id))?;
        if let Some(c) = user
            .connections
            .iter()
            .find(|c| self.connections.get(c).is_some_and(|c| c.running))
        {
            return Err(ApiError::sync_in_progress(*c));
        }
        let conns: Vec<u64> = user.connections.iter().copied().collect();
        for c in conns {
            self.remove_connection(c);
        }
        let user = self.users.remove(&id).expect("checked above");
        self.by_email.remove(&user.email);
        Ok(user)
    }

    /// `DELETE /connections/{id}`.
    pub fn delete_connection(&mut self, id: u64) -> Result<Connection, ApiError> {
        let conn = self
            .connections
            .get(&id)
            .ok_or_else(|| ApiError::not_found("connection", id))?;
        if conn.running {
            return Err(ApiError::sync_in_progress(id));
        }
        Ok(self.remove_connection(id).expect("checked above"))
    }

    /// `DELETE /accounts/{id}` with the seed's cascade: the last account of a channel empties the
    /// channel (credentials gone, `status: EMPTY`); no non-empty channel left deletes the connection.
    /// The bank keeps the account: a later LIST_ACCOUNTS brings it back.
    pub fn delete_account(&mut self, id: u64) -> Result<(Account, Cascade), ApiError> {
        let cid = self
            .accounts
            .get(&id)
            .ok_or_else(|| ApiError::not_found("account", id))?
            .connection_id;
        let (_, ci, bi) = *self.bank_index.get(&id).expect("account has a bank entry");
        let conn = self
            .connections
            .get(&cid)
            .expect("account has a connection");
        if conn.running {
            return Err(ApiError::sync_in_progress(cid));
        }
        let acc = self.remove_account_data(id).expect("checked above");
        let conn = self.connections.get_mut(&cid).expect("checked above");
        conn.accounts.remove(&id);
        let chan = &mut conn.channels[ci];
        chan.bank[bi].linked = None;
        chan.linked -= 1;
        let mut cascade = Cascade::default();
        if chan.linked == 0 {
            chan.status = "EMPTY";
            chan.expires = None;
            cascade.channel_emptied = true;
        }
        if conn.channels.iter().all(Channel::is_empty) {
            self.remove_connection(cid);
            cascade.connection_deleted = true;
        }
        Ok((acc, cascade))
    }

    /// `POST /connections/{id}/synchronize`: the connection becomes RUNNING.
    pub fn start_sync(&mut self, id: u64) -> Result<(), ApiError> {
        let conn = self
            .connections
            .get_mut(&id)
            .ok_or_else(|| ApiError::not_found("connection", id))?;
        if conn.running {
            return Err(ApiError::sync_in_progress(id));
        }
        conn.running = true;
        conn.status = "RUNNING";
        Ok(())
    }

    fn push_event(&mut self, event_type: &str, channel: &str, now: i64, resource: &Value) -> u64 {
        let id = self.next_event_id;
        self.next_event_id += 1;
        let body = json!({
            "id": id.to_string(),
            "event_type": event_type,
            "resource_type": "CONNECTION",
            "channel_definition_id": channel,
            "creation_date": now,
            "resource": resource,
        });
        self.events.push(Event { id, body });
        id
    }

    /// End of a synchronisation. LIST_ACCOUNTS: per non-EMPTY channel, every bank account is
    /// PRESENT (associated), NEW (the bank has it and it is not associated: deleted accounts come
    /// back here) or MISSING (associated, the bank closed it); one LIST_ACCOUNTS_SUCCESS event per
    /// channel. Then the ALL synchronisation: balances refreshed, one SYNC_SUCCESS per channel.
    ///
    /// A re-added account gets a NEW id (it is a new association in the aggregator; the old id
    /// stays 404). Its data (IBAN, reference, number, transactions) is the bank's, so it is the
    /// same personal data as before the deletion. With `keep_ids` (fault `readd_keeps_ids`) it gets
    /// its former id back instead, as an aggregator that keeps ids would. A MISSING account stays
    /// associated with `status: "CLOSED"` until it is deleted.
    pub fn finish_sync(&mut self, id: u64, kind: SyncKind, now: i64, keep_ids: bool) {
        let Some(conn) = self.connections.get_mut(&id) else {
            return;
        };
        conn.running = false;
        conn.status = "SUCCESS";
        let channels: Vec<usize> = (0..conn.channels.len())
            .filter(|ci| !conn.channels[*ci].is_empty())
            .collect();
        let mut listed: Vec<(String, Vec<(u64, &'static str)>)> = Vec::new();
        if kind == SyncKind::ListAccounts {
            for &ci in &channels {
                let mut entries = Vec::new();
                let n = self.connections[&id].channels[ci].bank.len();
                for bi in 0..n {
                    let ba = &self.connections[&id].channels[ci].bank[bi];
                    match (ba.open, ba.linked) {
                        (true, Some(a)) => entries.push((a, "PRESENT")),
                        (true, None) => {
                            entries.push((self.link(id, ci, bi, Some(now), keep_ids), "NEW"))
                        }
                        (false, Some(a)) => {
                            if let Some(acc) = self.accounts.get_mut(&a) {
                                acc.status = "CLOSED";
                            }
                            entries.push((a, "MISSING"))
                        }
                        (false, None) => {}
                    }
                }
                listed.push((self.connections[&id].channels[ci].id.clone(), entries));
            }
        }
        // The ALL synchronisation: balances and channel dates refreshed.
        let conn = self.connections.get_mut(&id).expect("still there");
        for &ci in &channels {
            let ch = &mut conn.channels[ci];
            ch.last_success_date = Some(now);
            ch.last_end_date = Some(now);
        }
        let account_ids: Vec<u64> = conn.accounts.iter().copied().collect();
        for a in account_ids {
            if let Some(acc) = self.accounts.get_mut(&a)
                && acc.status == "ACTIVE"
            {
                acc.balance_date = now;
            }
        }
        let resource = serde_json::to_value(&self.connections[&id]).unwrap_or(Value::Null);
        for (channel, entries) in listed {
            let accounts: Vec<Value> = entries
                .iter()
                .filter_map(|(a, status)| {
                    let acc = self.accounts.get(a)?;
                    let mut v = json!({
                        "id": acc.id.to_string(),
                        "reference": acc.reference,
                        "name": acc.name,
                        "currency": acc.currency,
                        "payment_destination": false,
                        "payment_source": false,
                        "balance": acc.balance,
                        "balance_date": acc.balance_date,
                        "status": status,
                        "type": acc.kind,
                        "account_number": acc.account_number,
                        "iban": acc.iban,
                        "connection_id": id.to_string(),
                    });
                    if acc.kind == "SAVINGS" {
                        v["savings"] = json!({"type": "OTHER"});
                    }
                    Some(v)
                })
                .collect();
            let eid = self.push_event("LIST_ACCOUNTS_SUCCESS", &channel, now, &resource);
            let last = self.events.last_mut().expect("just pushed");
            debug_assert_eq!(last.id, eid);
            last.body["list_accounts_success"] = json!({ "accounts": accounts });
        }
        let channel_ids: Vec<String> = channels
            .iter()
            .map(|ci| self.connections[&id].channels[*ci].id.clone())
            .collect();
        for ch in channel_ids {
            self.push_event("SYNC_SUCCESS", &ch, now, &resource);
        }
    }

    /// Events with an id larger than `since`, oldest first.
    pub fn events_since(&self, since: u64, limit: usize) -> &[Event] {
        let start = self.events.partition_point(|e| e.id <= since);
        let end = (start + limit).min(self.events.len());
        &self.events[start..end]
    }

    /// `/_sim/bank/accounts/{id}/close|reopen`: the bank closes (or reopens) the account behind an
    /// aggregator account id, current or deleted.
    pub fn bank_set_open(&mut self, account_id: u64, open: bool) -> Result<(), ApiError> {
        let (cid, ci, bi) = *self
            .bank_index
            .get(&account_id)
            .ok_or_else(|| ApiError::not_found("bank account of account", account_id))?;
        let conn = self.connections.get_mut(&cid).expect("indexed");
        conn.channels[ci].bank[bi].open = open;
        Ok(())
    }

    /// `/_sim/bank/connections/{id}/channels/{channel}/accounts`: the bank opens a new account
    /// behind a channel (reported NEW, and added, by the next LIST_ACCOUNTS). Returns its reference.
    pub fn bank_add(&mut self, cid: u64, channel: &str) -> Result<String, ApiError> {
        let conn = self
            .connections
            .get(&cid)
            .ok_or_else(|| ApiError::not_found("connection", cid))?;
        let bank_code = conn.bank_code;
        let ci = conn
            .channels
            .iter()
            .position(|c| c.id == channel)
            .ok_or_else(|| ApiError::not_found("channel", channel))?;
        let product = fake::product(&mut self.rng, bank_code);
        let reference = product.reference.clone();
        let key = self.next_bank_key;
        self.next_bank_key += 1;
        let transactions = self.rng.random_range(2..=6);
        let conn = self.connections.get_mut(&cid).expect("checked above");
        conn.channels[ci].bank.push(BankAccount {
            key,
            product,
            open: true,
            linked: None,
            history: Vec::new(),
            transactions,
        });
        Ok(reference)
    }
}
