//! Reading audit inputs: files (plain or gzip), or stdin for `-`, decoded into event records.
