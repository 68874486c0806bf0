//! Reads of the host list kept in memory ([`crate::hostlist`]) and of the facts the host page
//! shows beyond the host row (the EK certificate's issuer, the last verified quote's PCRs).

use sqlx::Row;

use super::{
    host_from_row, in_list, names_query, HostRow, Result, ShapedSql, Store, StoreError, BATCH_MAX,
};

/// The columns of a listed host: [`Store::host_summaries`]' (no keys, facts or certificate pin)
/// plus the agent address, the time of the row's last write and its version.
const LISTED_COLUMNS: &str = "h.name, h.hardware_uuid, h.connection_url, '' AS tls_cert_sha256, \
     '' AS ek_public, '' AS ak_public, '' AS host_info, h.software_tpm, h.status, h.status_detail, \
     h.reset_count, h.restart_count, h.verdict, h.reasons, h.attested_at, h.expires_at, h.created, \
     h.updated, h.version";

/// The number of hosts and the sum of their versions, as columns `n` and `s`.
const COUNT_AND_SUM: &str =
    "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(version), 0) AS BIGINT) AS s FROM hosts";

/// One host as the in-memory list keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRow {
    /// The host, without its keys, facts and certificate pin (those are empty).
    pub row: HostRow,
    /// When the row was last written other than by an attestation (Unix ms, the writer's
    /// clock): an attestation's write of the verdict leaves it (migration 10).
    pub updated: i64,
    /// Incremented by every write of the row.
    pub version: i64,
}

/// Every host's count and the sum of their versions, with the rows written since a moment, all
/// read in one statement (one snapshot of the table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSnapshot {
    /// How many hosts there are.
    pub count: i64,
    /// The sum of every host's version.
    pub version_sum: i64,
    /// The hosts written at or after the moment asked for.
    pub rows: Vec<ListedRow>,
}

/// The PCR values of a host's last verified quote, as stored with its report: read with
/// `pcrs` as a `serde_json::Value`, written from the values (`PcrValues::json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QuotedPcrs<P = serde_json::Value> {
    /// When the quote was verified (Unix ms): the time of its report.
    pub quoted_at: i64,
    /// The quoted values, `{"sha256": {"0": "hex", ...}}` (`PcrValues::to_json`).
    pub pcrs: P,
}

/// `host_pcrs.quoted_pcrs`: `{"pcrs": ...}`, or before migration 12 `{"quoted_at": ms, "pcrs": ...}`.
#[derive(serde::Deserialize)]
struct StoredText {
    #[serde(default)]
    quoted_at: Option<i64>,
    pcrs: serde_json::Value,
}

impl QuotedPcrs {
    /// The stored values (`host_pcrs.quoted_pcrs`) and their time (`hosts.pcrs_quoted_at`, or for
    /// values written before migration 12 the time stored within).
    pub fn read(stored: &str, quoted_at: Option<i64>) -> Result<Self> {
        let corrupt = |detail: String| StoreError::Corrupt {
            table: "hosts",
            detail,
        };
        let s: StoredText =
            serde_json::from_str(stored).map_err(|e| corrupt(format!("quoted_pcrs: {e}")))?;
        let quoted_at = quoted_at
            .or(s.quoted_at)
            .ok_or_else(|| corrupt("quoted_pcrs without the time of their quote".into()))?;
        Ok(QuotedPcrs {
            quoted_at,
            pcrs: s.pcrs,
        })
    }
}

/// What the host page shows of a host beyond its row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// The issuer (distinguished name) of the EK certificate the registration was accepted
    /// with: one that chains to the manufacturer CA bundle, or the certificate of the
    /// endorsement that listed the EK. `None`: the EK was endorsed by its public key.
    pub ek_issuer: Option<String>,
    /// The PCR values of the last verified quote.
    pub quoted_pcrs: Option<QuotedPcrs>,
}

fn listed_from_row(r: &sqlx::any::AnyRow) -> Result<ListedRow> {
    Ok(ListedRow {
        row: host_from_row(r)?,
        updated: r.try_get("updated")?,
        version: r.try_get("version")?,
    })
}

impl Store {
    /// The number of hosts and the sum of their versions, and every host written at or after
    /// `since` (Unix ms), in one statement: the rows whose `updated` is that recent, and those
    /// of the hosts with a report made since (an attestation writes its host's verdict without
    /// moving `updated`, an indexed column: migration 10).
    pub async fn listed_hosts_since(&self, since: i64) -> Result<ListedSnapshot> {
        let q = format!(
            "WITH written AS (SELECT name FROM hosts WHERE updated >= $1 \
             UNION SELECT host_name FROM reports WHERE created >= $1) \
             SELECT c.n, c.s, {LISTED_COLUMNS} FROM ({COUNT_AND_SUM}) c \
             LEFT JOIN (SELECT hw.* FROM written w JOIN hosts hw ON hw.name = w.name) h ON 1 = 1"
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(q)).bind(since);
        self.listed_snapshot(query).await
    }

    /// The number of hosts and the sum of their versions, and every host, in one statement.
    pub async fn listed_hosts_all(&self) -> Result<ListedSnapshot> {
        let q = format!(
            "SELECT c.n, c.s, {LISTED_COLUMNS} FROM ({COUNT_AND_SUM}) c LEFT JOIN hosts h ON 1 = 1"
        );
        self.listed_snapshot(sqlx::query(sqlx::AssertSqlSafe(q)))
            .await
    }

    async fn listed_snapshot(
        &self,
        query: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<ListedSnapshot> {
        let rows = query.fetch_all(&mut *self.reader.get().await?).await?;
        let mut snapshot = ListedSnapshot {
            count: 0,
            version_sum: 0,
            rows: Vec::with_capacity(rows.len()),
        };
        for r in &rows {
            snapshot.count = r.try_get("n")?;
            snapshot.version_sum = r.try_get("s")?;
            if r.try_get::<Option<String>, _>("name")?.is_some() {
                snapshot.rows.push(listed_from_row(r)?);
            }
        }
        Ok(snapshot)
    }

    /// The hosts of these names that exist.
    pub async fn listed_hosts_named(&self, names: &[&str]) -> Result<Vec<ListedRow>> {
        let mut out = Vec::with_capacity(names.len());
        static LISTED: ShapedSql = ShapedSql::new(|backend, shape| {
            let select = format!("SELECT {LISTED_COLUMNS} FROM hosts h WHERE h.name");
            in_list(backend, &select, shape, "")
        });
        for chunk in names.chunks(BATCH_MAX) {
            let query = names_query(self.backend, &LISTED, chunk);
            for r in query.fetch_all(&mut *self.reader.get().await?).await? {
                out.push(listed_from_row(&r)?);
            }
        }
        Ok(out)
    }

    /// What the host page shows of a host beyond its row; `None` when there is no such host.
    /// Stored PCR values that do not read are a corrupt row.
    pub async fn host_facts(&self, name: &str) -> Result<Option<HostFacts>> {
        let row = sqlx::query(
            "SELECT h.ek_issuer, p.quoted_pcrs, h.pcrs_quoted_at FROM hosts h \
             LEFT JOIN host_pcrs p ON p.name = h.name WHERE h.name = $1",
        )
        .bind(name)
        .fetch_optional(&mut *self.reader.get().await?)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let quoted_at: Option<i64> = r.try_get("pcrs_quoted_at")?;
        let quoted_pcrs = r
            .try_get::<Option<String>, _>("quoted_pcrs")?
            .map(|text| QuotedPcrs::read(&text, quoted_at))
            .transpose()?;
        Ok(Some(HostFacts {
            ek_issuer: r.try_get("ek_issuer")?,
            quoted_pcrs,
        }))
    }
}
