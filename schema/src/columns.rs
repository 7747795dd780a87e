//! Column and constraint helpers shared by the migrations, so every table
//! spells types, keys and indexes the same way on SQLite and PostgreSQL.

use sea_orm_migration::prelude::*;

/// `id BIGINT` autoincrement primary key.
pub(crate) fn pk<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col)
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .take()
}

pub(crate) fn big_integer<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).big_integer().not_null().take()
}

pub(crate) fn big_integer_null<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).big_integer().null().take()
}

pub(crate) fn integer<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).integer().not_null().take()
}

pub(crate) fn integer_null<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).integer().null().take()
}

pub(crate) fn double<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).double().not_null().take()
}

pub(crate) fn double_null<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).double().null().take()
}

pub(crate) fn boolean<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).boolean().not_null().take()
}

pub(crate) fn string<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).string().not_null().take()
}

pub(crate) fn string_null<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).string().null().take()
}

pub(crate) fn text<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).text().not_null().take()
}

pub(crate) fn text_null<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).text().null().take()
}

/// A named foreign key `from_tbl.from_col → to_tbl.to_col`, declared inside `CREATE TABLE`
/// (SQLite cannot add one afterwards).
pub(crate) fn fk<F: IntoIden, T: IntoIden>(
    name: &str,
    from_tbl: F,
    from_col: F,
    to_tbl: T,
    to_col: T,
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from_tbl, from_col)
        .to(to_tbl, to_col)
        .on_delete(on_delete)
        .on_update(ForeignKeyAction::NoAction)
        .take()
}

pub(crate) fn index<T: IntoIden + Copy + 'static>(
    name: &str,
    table: T,
    cols: &[T],
) -> IndexCreateStatement {
    let mut stmt = Index::create();
    stmt.name(name).table(table);
    for &col in cols {
        stmt.col(col);
    }
    stmt.take()
}

pub(crate) fn unique<T: IntoIden + Copy + 'static>(
    name: &str,
    table: T,
    cols: &[T],
) -> IndexCreateStatement {
    index(name, table, cols).unique().take()
}
