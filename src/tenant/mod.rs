//! What a tenant is: its validated id, its domain and the features it may use.

mod config;
mod entry;
mod id;

pub use config::{
    Branding, ContactInfo, Isolation, MAX_SCHEMA_TENANT_ID_LEN, PoolOverrides, RequestLimits,
    TenantConfig, TenantSource, shared_storage_error, sqlite_file_of, storage_identity_of,
};
pub use entry::{
    ConfigError, check_database_url, check_tenant_database_url, check_url_parameters,
    parse_tenant_entry,
};
pub(crate) use entry::{RawTenant, path_error, validate_entries};
pub use id::TenantId;

use serde::Serialize;

/// A product area a tenant may be allowed to use; each route group requires one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    Products,
    CashFlow,
    PatientManagement,
    TreatmentTracking,
    DentalSupplies,
    BomManagement,
    ProductionTracking,
    MaterialManagement,
}

impl Feature {
    /// Every feature, in a stable order.
    pub const ALL: [Feature; 8] = [
        Feature::Products,
        Feature::CashFlow,
        Feature::PatientManagement,
        Feature::TreatmentTracking,
        Feature::DentalSupplies,
        Feature::BomManagement,
        Feature::ProductionTracking,
        Feature::MaterialManagement,
    ];

    /// Features every tenant has, whatever its domain or explicit list.
    pub const COMMON: [Feature; 2] = [Feature::Products, Feature::CashFlow];

    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Products => "products",
            Feature::CashFlow => "cash_flow",
            Feature::PatientManagement => "patient_management",
            Feature::TreatmentTracking => "treatment_tracking",
            Feature::DentalSupplies => "dental_supplies",
            Feature::BomManagement => "bom_management",
            Feature::ProductionTracking => "production_tracking",
            Feature::MaterialManagement => "material_management",
        }
    }

    pub fn parse(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

impl std::fmt::Display for Feature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The business a tenant is in; it picks the default feature preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    Dental,
    Manufacturing,
    Default,
}

impl Domain {
    pub fn parse(name: &str) -> Option<Domain> {
        match name {
            "dental" => Some(Domain::Dental),
            "manufacturing" => Some(Domain::Manufacturing),
            "default" => Some(Domain::Default),
            _ => None,
        }
    }

    /// The domain's own features; common features come on top of these.
    pub fn preset(self) -> &'static [Feature] {
        match self {
            Domain::Dental => &[
                Feature::PatientManagement,
                Feature::TreatmentTracking,
                Feature::DentalSupplies,
            ],
            Domain::Manufacturing => &[
                Feature::BomManagement,
                Feature::ProductionTracking,
                Feature::MaterialManagement,
            ],
            Domain::Default => &[],
        }
    }
}

/// The set of features one tenant may use, as a bit set: checking it is one AND.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FeatureSet(u16);

impl FeatureSet {
    pub fn all() -> Self {
        Self::from_iter(Feature::ALL)
    }

    /// The common features plus either the explicit list or the domain's preset.
    pub fn for_tenant(domain: Domain, explicit: Option<&[Feature]>) -> Self {
        let chosen = explicit.unwrap_or(domain.preset());
        Self::from_iter(Feature::COMMON.into_iter().chain(chosen.iter().copied()))
    }

    pub fn contains(self, feature: Feature) -> bool {
        self.0 & (1 << feature as u16) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Feature> {
        Feature::ALL.into_iter().filter(move |f| self.contains(*f))
    }
}

impl FromIterator<Feature> for FeatureSet {
    fn from_iter<I: IntoIterator<Item = Feature>>(iter: I) -> Self {
        Self(iter.into_iter().fold(0, |bits, f| bits | 1 << f as u16))
    }
}

impl Serialize for FeatureSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_that_name_no_file_or_carry_unknown_parameters_are_refused() {
        for url in [
            "sqlite::memory:",
            "sqlite://",
            "sqlite:",
            "sqlite://:memory:",
            "sqlite://data/x.db?mode=memory",
        ] {
            let why = check_database_url(url).unwrap_err();
            assert!(why.contains("database file"), "{url}: {why}");
        }
        for url in [
            "postgres://u@h/db?sslpassword=KeyPassS3cret",
            "postgres://u@h/db?sslmode=require&Password=KeyPassS3cret",
            "postgres://u@h/db?connect_timeout=KeyPassS3cret",
        ] {
            let why = check_url_parameters(url).unwrap_err();
            assert!(why.contains("does not read"), "{url}: {why}");
            assert!(!why.contains("KeyPassS3cret"), "{why}");
            // A row stored before these rules still loads.
            assert_eq!(check_database_url(url), Ok(()), "{url}");
        }
        for url in [
            "postgres://u@h/db?sslmode=bogus",
            "postgres://u@h/db?sslmode=require&sslmode=bogus",
        ] {
            let why = check_tenant_database_url(url).unwrap_err();
            assert!(why.contains("sslmode"), "{why}");
        }
        assert_eq!(
            check_url_parameters("postgres://u@h/db?sslmode=Require"),
            Ok(())
        );
        for url in [
            "sqlite://data/x.db?mode=rwc",
            "postgres://u:p@h/db?sslmode=require&sslrootcert=/ca.pem&application_name=a&options[search_path]=x",
        ] {
            assert_eq!(check_database_url(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn dental_preset_includes_common_features_and_nothing_from_manufacturing() {
        let set = FeatureSet::for_tenant(Domain::Dental, None);
        assert!(set.contains(Feature::Products));
        assert!(set.contains(Feature::CashFlow));
        assert!(set.contains(Feature::PatientManagement));
        assert!(!set.contains(Feature::MaterialManagement));
    }

    #[test]
    fn explicit_list_replaces_the_preset_but_keeps_common_features() {
        let set = FeatureSet::for_tenant(Domain::Dental, Some(&[Feature::MaterialManagement]));
        assert!(set.contains(Feature::MaterialManagement));
        assert!(!set.contains(Feature::PatientManagement));
        assert!(set.contains(Feature::Products));
    }

    #[test]
    fn every_feature_name_round_trips() {
        for f in Feature::ALL {
            assert_eq!(Feature::parse(f.as_str()), Some(f));
        }
        assert_eq!(Feature::parse("Products"), None);
    }
}
