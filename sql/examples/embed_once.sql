-- Embed once, relabel forever: store image embeddings in Parquet, then
-- classify the stored vectors with new labels without decoding any image.
--   clipql sql --model tests/fixtures/model -f sql/examples/embed_once.sql
CREATE EXTERNAL TABLE images STORED AS IMAGE LOCATION 'tests/fixtures/photos/';

COPY (SELECT path, name, clip_image_embedding(image) AS embedding FROM images)
TO 'target/clipql-example-embeddings.parquet';

SELECT name, clip_classify_embedding(embedding, ['a photo of a cat', 'a photo of a horse', 'a page of text']) AS label
FROM 'target/clipql-example-embeddings.parquet'
ORDER BY name;
