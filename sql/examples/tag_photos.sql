-- Multi-label tags with SigLIP, and "none of these" when no label is likely
-- enough. SigLIP scores each label with its own sigmoid, so a threshold
-- means the same however many labels are offered.
-- Run from the repository root:
--   clipql sql -f sql/examples/tag_photos.sql
SET clip.model = 'tests/fixtures/siglip/model';

CREATE EXTERNAL TABLE images STORED AS IMAGE LOCATION 'tests/fixtures/photos/';

SELECT name,
       clip_tags(image, ['a photo of a cat', 'a photo of a dog', 'a photo of a rocket', 'a cup of coffee'], 0.5) AS tags,
       CASE WHEN clip_image_error(image) IS NULL
            THEN coalesce(clip_tags(image, ['a photo of a cat', 'a photo of a dog', 'a photo of a rocket', 'a cup of coffee'], 0.5)[1], 'none of these')
       END AS answer,
       clip_image_error(image) AS error
FROM images
ORDER BY name;
