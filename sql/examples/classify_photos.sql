-- Classify every photo in a folder and show the top three labels with scores.
-- Run from the repository root:
--   clipql sql --model tests/fixtures/model -f sql/examples/classify_photos.sql
CREATE EXTERNAL TABLE images STORED AS IMAGE LOCATION 'tests/fixtures/photos/';

SELECT name,
       clip_classify(image, ['a photo of a cat', 'a photo of a dog', 'a photo of a rocket', 'a cup of coffee']) AS label,
       clip_scores(image, ['a photo of a cat', 'a photo of a dog', 'a photo of a rocket', 'a cup of coffee'])[1:3] AS top3,
       clip_image_error(image) AS error
FROM images
ORDER BY name;
