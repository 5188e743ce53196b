//! gpufed pure placement engine and market: snapshot in, decisions out.
