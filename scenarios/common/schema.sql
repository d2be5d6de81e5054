-- Schema and data of the checkout scenarios' database.
CREATE TABLE products (
    id    integer PRIMARY KEY,
    name  text    NOT NULL,
    price integer NOT NULL
);
INSERT INTO products (id, name, price)
SELECT i, 'product ' || i, 100 + (i * 37) % 900 FROM generate_series(1, 50) AS i;
CREATE TABLE orders (
    id         bigserial PRIMARY KEY,
    user_id    integer NOT NULL,
    product_id integer NOT NULL REFERENCES products (id),
    created    timestamptz NOT NULL DEFAULT now()
);
