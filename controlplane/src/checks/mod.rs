//! Configuration checks shared by the running control plane (reported as warnings on
//! `/debug/errors` and by `meshwork errors`) and offline `meshwork analyze`: one home per
//! rule, the caller supplies how names resolve in its context.

pub mod subsets;
